"""``flux-async batch`` journaled and resumed: killed (SIGKILL, Ctrl-C) and run again with
``--resume``, nothing is paid twice and the manifest keeps one line per input.

The FakeProvider runs in this process (a thread of its own) and outlives the command, which
reaches it over loopback as if it were ShortAPI. Where a crash is the point, the command is
a real subprocess (``python -m flux_async``), killed once the fake has counted some creates.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import PNG, against, read_manifest
from conftest import Run, serve_fake

import flux_async
from flux_async.testing import FakeProvider

N = 24
COMMAND = [sys.executable, "-m", "flux_async"]


@pytest.fixture
def slow_fake() -> Iterator[FakeProvider]:
    """Jobs that take a while, so that a run can be stopped half-way."""
    with serve_fake(latency=(0.4, 0.9), seed=3) as provider:
        yield provider


def _prompts(tmp_path: Path, n: int = N) -> Path:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"resumable fox {i}\n" for i in range(n)), encoding="utf-8")
    return source


def _created(fake: FakeProvider) -> int:
    return sum(fake.creates_per_prompt.values())


def _start(argv: list[str]) -> subprocess.Popen[str]:
    root = str(Path(flux_async.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}

    def sigint_by_default() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        [*COMMAND, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=sigint_by_default,
    )


def _wait_for_creates(process: subprocess.Popen[str], fake: FakeProvider, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while _created(fake) < at_least:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the batch did not get going"
        time.sleep(0.01)


def _check_resumed(out: Path, fake: FakeProvider, n: int = N) -> list[dict[str, object]]:
    rows = read_manifest(out / "manifest.jsonl")
    assert [row["index"] for row in rows] == list(range(n))  # one line per input, in order
    assert max(fake.creates_per_prompt.values()) == 1  # nothing paid twice
    assert len(fake.creates_per_prompt) <= n
    for row in rows:
        if row["status"] == "succeeded":
            files = row["files"]
            assert isinstance(files, list) and files
            assert all(Path(path).read_bytes().startswith(PNG) for path in files)
        else:
            # A create in flight at the kill, which ShortAPI cannot look up: never re-sent.
            assert row["status"] == "unknown", row
            assert row["error"]
    return rows


@pytest.mark.slow
def test_kill_9_then_resume_pays_nothing_twice(
    tmp_path: Path, slow_fake: FakeProvider, run: Run
) -> None:
    source, out = _prompts(tmp_path), tmp_path / "out"
    argv = [
        "batch",
        str(source),
        "--out",
        str(out),
        "--concurrency",
        "6",
        "-q",
        *against(slow_fake),
    ]
    process = _start(argv)
    try:
        _wait_for_creates(process, slow_fake, 9)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert (out / "journal.sqlite").exists()  # on by default, inside --out
    assert _created(slow_fake) < N

    # Again without --resume: refused in one line, nothing sent.
    before = slow_fake.create_attempts
    status, _, stderr = run(*argv)
    assert status == 2
    assert stderr.count("\n") == 1 and "--resume" in stderr and "another --out" in stderr
    assert slow_fake.create_attempts == before

    status, stdout, stderr = run(*argv, "--resume")
    assert status in (0, 1), stderr
    rows = _check_resumed(out, slow_fake)
    resumed = [row for row in rows if row.get("resumed")]
    assert resumed and all(row["resumed"] is True for row in resumed)
    assert all("resumed" not in row for row in rows if row not in resumed)
    assert sum(row["status"] == "succeeded" for row in rows) >= N - 6
    assert f"{N} lines" in stdout

    # Resumed once more, everything is already settled: nothing sent, nothing downloaded.
    attempts = slow_fake.create_attempts
    stamps = {path: os.stat(path).st_mtime_ns for row in rows for path in row["files"]}
    status, _, stderr = run(*argv, "--resume")
    again = _check_resumed(out, slow_fake)
    assert slow_fake.create_attempts == attempts
    assert [row["status"] for row in again] == [row["status"] for row in rows]
    assert all(row["resumed"] is True for row in again)
    assert {path: os.stat(path).st_mtime_ns for path in stamps} == stamps


@pytest.mark.slow
def test_ctrl_c_prints_the_command_that_resumes(
    tmp_path: Path, slow_fake: FakeProvider, run: Run
) -> None:
    source, out = _prompts(tmp_path), tmp_path / "out"
    argv = [
        "batch",
        str(source),
        "--out",
        str(out),
        "--concurrency",
        "6",
        "-q",
        *against(slow_fake, key="secret-key-123"),
    ]
    process = _start(argv)
    try:
        _wait_for_creates(process, slow_fake, 8)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "secret-key-123" not in stdout + stderr
    assert "left in flight" in stdout and "recorded in the journal" in stdout, stdout
    assert str(out / "journal.sqlite") in stdout
    [hint] = [line for line in stdout.splitlines() if line.startswith("to resume: ")]
    command = hint.removeprefix("to resume: ").split("  (")[0]
    words = shlex.split(command)
    assert words[0] == "flux-async" and words[-1] == "--resume"
    assert "add your API key" in hint

    # The printed command, with the key given back, resumes the batch.
    status, _, stderr = run(*words[1:], "--api-key", "secret-key-123")
    assert status in (0, 1), stderr
    _check_resumed(out, slow_fake)


def test_another_input_is_refused_naming_the_line(
    tmp_path: Path, fake: FakeProvider, run: Run
) -> None:
    source, out = _prompts(tmp_path, 5), tmp_path / "out"
    argv = ["batch", str(source), "--out", str(out), "-q", *against(fake)]
    assert run(*argv)[0] == 0
    first = read_manifest(out / "manifest.jsonl")
    attempts = fake.create_attempts

    lines = source.read_text(encoding="utf-8").splitlines()
    lines[3] = "a different fox"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    status, _, stderr = run(*argv, "--resume")
    assert status == 2
    assert stderr.count("\n") == 1, stderr
    assert "line 4 (input 3)" in stderr and "--new-batch" in stderr
    assert fake.create_attempts == attempts  # nothing sent
    assert read_manifest(out / "manifest.jsonl") == first  # the manifest is untouched

    # --resume and --new-batch contradict each other.
    status, _, stderr = run(*argv, "--resume", "--new-batch")
    assert status == 2 and stderr.count("\n") == 1
    assert fake.create_attempts == attempts

    # A new batch in the same journal: the earlier manifest is kept aside.
    status, _, stderr = run(*argv, "--new-batch")
    assert status == 0, stderr
    assert read_manifest(out / "manifest.1.jsonl") == first
    rows = read_manifest(out / "manifest.jsonl")
    assert [row["index"] for row in rows] == list(range(5))
    assert rows[3]["prompt"] == "a different fox" and "resumed" not in rows[3]
    assert fake.create_attempts == attempts + 5


def test_a_corrupt_journal_is_one_clear_line(tmp_path: Path, fake: FakeProvider, run: Run) -> None:
    source, out = _prompts(tmp_path, 3), tmp_path / "out"
    out.mkdir()
    (out / "journal.sqlite").write_bytes(b"this is not a database" * 100)
    status, _, stderr = run("batch", str(source), "--out", str(out), "--resume", *against(fake))
    assert status == 2
    assert stderr.startswith("flux-async: ") and stderr.count("\n") == 1, stderr
    assert "journal" in stderr
    assert fake.create_attempts == 0


def test_resume_help_says_where_the_journal_is_and_what_may_pay_twice(run: Run) -> None:
    status, stdout, _ = run("batch", "--help")
    assert status == 0
    text = " ".join(stdout.split())
    assert "DIR/journal.sqlite, i.e. the journal is on, inside --out" in text
    assert "MAY PAY TWICE" in text
    assert "--resume" in text and "--new-batch" in text
