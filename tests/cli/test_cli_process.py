"""The command as its own process: ``python -m flux_async``, Ctrl-C, the ``--help`` examples."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import PNG, read_manifest

pytestmark = pytest.mark.slow

COMMAND = [sys.executable, "-m", "flux_async"]


def _sigint_by_default() -> None:
    # A shell may start background jobs with SIGINT ignored, and the command (like Python)
    # then leaves it ignored; this test is about what Ctrl-C does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_python_dash_m_runs_the_command() -> None:
    done = subprocess.run([*COMMAND, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.startswith("flux-async ")
    done = subprocess.run([*COMMAND, "batch"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("flux-async: the following arguments are required: FILE")


def test_ctrl_c_records_every_line_and_the_counts_agree(tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text(
        "# two hundred foxes\n" + "".join(f"fox number {i}\n" for i in range(200)),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    process = subprocess.Popen(
        [
            *COMMAND,
            "batch",
            str(source),
            "--provider",
            "fake",
            "--fake-latency",
            "0.3,2.5",
            "--concurrency",
            "40",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_by_default,
    )
    try:
        # Interrupt once the run is under way: some lines done, some in flight.
        deadline = time.monotonic() + 30
        while not (manifest.exists() and manifest.read_text(encoding="utf-8").count("\n") >= 3):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the batch did not get going"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert re.search(r"interrupted: cancelling \d+ jobs in flight", stderr)

    rows = read_manifest(manifest)
    assert len(rows) == 200
    assert sorted(row["index"] for row in rows) == list(range(200))
    assert sorted(row["line"] for row in rows) == list(range(2, 202))
    statuses = Counter(row["status"] for row in rows)
    assert set(statuses) <= {"succeeded", "cancelled", "not_started"}, statuses
    assert statuses["succeeded"] >= 3 and statuses["not_started"] > 0
    for row in rows:
        if row["status"] == "succeeded":
            assert Path(row["files"][0]).read_bytes().startswith(PNG)
        else:
            assert "interrupted" in row["error"]
    # Jobs cancelled in flight keep their provider ids: they may have been paid for.
    assert any(row["job_id"] for row in rows if row["status"] == "cancelled")
    summary = (
        f"{statuses['succeeded']} succeeded, 0 failed, 0 skipped, 0 rejected, "
        f"{statuses['cancelled']} cancelled, {statuses['not_started']} not started"
    )
    assert "interrupted after" in stdout and summary in stdout, stdout
    # The last progress line tells the same story as the summary.
    last = [line for line in stderr.splitlines() if "/200 done" in line][-1]
    assert last.startswith(
        f"flux-async: 200/200 done: {statuses['succeeded']} ok, 0 failed, 0 in flight, "
        f"{statuses['cancelled']} cancelled, {statuses['not_started']} not started"
    ), last


def _help_examples() -> list[str]:
    """The example command lines of every --help page."""
    examples = []
    for argv in ([], ["generate"], ["batch"]):
        page = subprocess.run(
            [*COMMAND, *argv, "--help"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        examples += [
            line.strip() for line in page.splitlines() if re.match(r"\s+(.*\| )?flux-async ", line)
        ]
    return sorted(set(examples))


def test_the_help_examples_work_as_written(tmp_path: Path) -> None:
    """Those that need no key run with no file of this repository (a wheel ships none)."""
    examples = _help_examples()
    runnable = [example for example in examples if "--provider fake" in example]
    assert len(runnable) >= 4, examples
    flux_async = " ".join(shlex.quote(part) for part in COMMAND)
    for number, example in enumerate(runnable):
        command = example.replace("flux-async ", f"{flux_async} ") + " --fake-latency 0.01 -q"
        # Each in a fresh directory, as a user would try it (a second batch into the same
        # --out needs --resume).
        where = tmp_path / str(number)
        where.mkdir()
        done = subprocess.run(
            ["sh", "-c", command], cwd=where, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (example, done.stderr)
        assert "Traceback" not in done.stderr
