"""The ``flux-async`` command, run in-process against ``--provider fake`` (and once as a process).

`main` runs its own event loop with `asyncio.run`, so these are plain synchronous tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flux_async import FluxClient
from flux_async.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG = b"\x89PNG\r\n\x1a\n"
# Fast jobs: most tests need the command's behaviour, not realistic timing.
FAST = ["--provider", "fake", "--fake-latency", "0.01,0.05"]
MANIFEST_KEYS = [
    "index", "line", "prompt", "status", "job_id", "image_urls", "files", "cost", "error",
]


def read_manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_line(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {row["line"]: row for row in rows}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("SHORTAPI_KEY", "PIAPI_KEY", "AIMLAPI_KEY"):
        monkeypatch.delenv(variable, raising=False)


# -- batch ----------------------------------------------------------------------------------


def test_batch_of_the_example_prompts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    status, stdout, stderr = run(
        capsys, "batch", str(EXAMPLES / "prompts.txt"), *FAST, "--out", str(out)
    )
    assert status == 0, stderr

    lines = (EXAMPLES / "prompts.txt").read_text(encoding="utf-8").splitlines()
    prompts = {
        number: text.strip()
        for number, text in enumerate(lines, 1)
        if text.strip() and not text.startswith("#")
    }
    assert 15 <= len(prompts) <= 30
    rows = read_manifest(out / "manifest.jsonl")
    assert len(rows) == len(prompts)
    assert all(list(row) == MANIFEST_KEYS for row in rows)
    assert sorted(row["index"] for row in rows) == list(range(len(prompts)))
    assert {row["line"]: row["prompt"] for row in rows} == prompts
    for row in rows:
        assert row["status"] == "succeeded" and row["error"] is None
        assert row["job_id"] and row["cost"] == "0.02"
        assert len(row["image_urls"]) == len(row["files"]) == 1
        assert Path(row["files"][0]).read_bytes().startswith(PNG)
    assert len(list(out.glob("*.png"))) == len(prompts)

    assert f"{len(prompts)} succeeded, 0 failed, 0 skipped, 0 rejected" in stdout
    assert str(out / "manifest.jsonl") in stdout
    # The SIGINT handler of the run is gone again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_batch_of_the_example_requests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    status, _, stderr = run(
        capsys, "batch", str(EXAMPLES / "requests.jsonl"), *FAST, "--out", str(out), "-q"
    )
    assert status == 0, stderr
    assert stderr == ""
    requests = [
        json.loads(line)
        for line in (EXAMPLES / "requests.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    rows = by_line(read_manifest(out / "manifest.jsonl"))
    assert len(rows) == len(requests) >= 5
    for number, request in enumerate(requests, 1):
        row = rows[number]
        assert row["status"] == "succeeded"
        assert row["prompt"] == request["prompt"]
        assert len(row["files"]) == request.get("num_images", 1)
        assert row["cost"] == ("0.002" if "schnell" in json.dumps(request) else "0.02")
    assert any("image_url" in request for request in requests)


def test_bad_jsonl_lines_are_rejected_and_the_batch_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text(
        "\n".join(
            [
                '{"prompt": "a red fox"}',  # 1
                "",  # 2: skipped
                '{"prompt": "broken", ',  # 3
                '{"aspect_ratio": "16:9"}',  # 4
                '{"prompt": "square fox", "aspect_ratio": "5:4"}',  # 5
                "# a comment",  # 6: skipped
                '{"prompt": "a blue fox", "colour": "blue"}',  # 7
                '["not", "an", "object"]',  # 8
                '{"prompt": "a green fox", "num_images": 2}',  # 9
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    status, stdout, _ = run(capsys, "batch", str(source), *FAST, "--out", str(out))
    assert status == 1

    rows = by_line(read_manifest(out / "manifest.jsonl"))
    assert sorted(rows) == [1, 3, 4, 5, 7, 8, 9]
    assert sorted(row["index"] for row in rows.values()) == list(range(7))
    assert rows[1]["status"] == rows[9]["status"] == "succeeded"
    assert len(rows[9]["files"]) == 2
    for number in (3, 4, 5, 7, 8):
        assert rows[number]["status"] == "rejected"
        assert rows[number]["error"].startswith(f"line {number}: ")
        assert rows[number]["job_id"] is None and rows[number]["files"] == []
    assert rows[3]["error"].startswith("line 3: not valid JSON: ")
    assert rows[4]["error"] == 'line 4: missing "prompt"'
    assert "aspect_ratio" in rows[5]["error"] and "16:9" in rows[5]["error"]
    assert rows[5]["prompt"] == "square fox"
    assert "'colour'" in rows[7]["error"]
    assert "JSON object" in rows[8]["error"]
    assert "2 succeeded, 0 failed, 0 skipped, 5 rejected" in stdout


def test_failed_and_timed_out_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text(
        "a fine fox\n[fault:fail] a failing fox\n[fault:never-finish] an endless fox\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    manifest = tmp_path / "elsewhere" / "runs.jsonl"
    status, stdout, _ = run(
        capsys,
        "batch",
        str(source),
        *FAST,
        "--out",
        str(out),
        "--manifest",
        str(manifest),
        "--timeout",
        "1",
    )
    assert status == 1
    rows = by_line(read_manifest(manifest))
    assert [rows[n]["status"] for n in (1, 2, 3)] == ["succeeded", "failed", "timed_out"]
    assert rows[2]["job_id"] and "failed" in rows[2]["error"]
    assert rows[3]["job_id"] and "1s" in rows[3]["error"]
    assert "\n" not in rows[2]["error"]
    assert "2 failed (1 failed, 1 timed_out)" in stdout
    assert not (out / "manifest.jsonl").exists()


def test_budget_skips_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"fox number {i}\n" for i in range(8)), encoding="utf-8")
    out = tmp_path / "out"
    status, stdout, _ = run(
        capsys, "batch", str(source), *FAST, "--out", str(out), "--budget", "0.05"
    )
    assert status == 1
    rows = read_manifest(out / "manifest.jsonl")
    assert len(rows) == 8
    statuses = Counter(row["status"] for row in rows)
    assert statuses == {"succeeded": 2, "skipped": 6}
    skipped = [row for row in rows if row["status"] == "skipped"]
    assert all("budget" in row["error"] and row["job_id"] is None for row in skipped)
    assert "2 succeeded, 0 failed, 6 skipped, 0 rejected; cost 0.04" in stdout


def test_plain_progress_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"fox {i}\n" for i in range(30)), encoding="utf-8")
    status, _, stderr = run(
        capsys,
        "batch",
        str(source),
        "--provider",
        "fake",
        "--fake-latency",
        "0.8,1.6",
        "--out",
        str(tmp_path / "out"),
    )
    assert status == 0
    # Not a terminal: plain status lines, about one a second.
    progress = [line for line in stderr.splitlines() if "/30 done" in line]
    assert progress, stderr
    assert all(line.startswith("flux-async: ") for line in progress)
    assert "in flight" in progress[0] and "jobs/s" in progress[0] and "cost" in progress[0]


def test_rich_progress_display() -> None:
    pytest.importorskip("rich")
    from rich.console import Console

    from flux_async._cli.progress import RichDisplay, Tally

    async def show() -> str:
        stream = io.StringIO()
        console = Console(file=stream, force_terminal=True, width=100)
        tally = Tally(4, lambda: 1)
        display = RichDisplay(tally, console)
        display.start()
        tally.count("succeeded", "0.02")
        tally.count("failed", None)
        display.update()
        display.note("a message")
        await display.stop()
        return stream.getvalue()

    text = asyncio.run(show())
    assert "2/4" in text and "1 ok, 1 failed, 1 in flight" in text and "cost 0.02" in text
    assert "flux-async: a message" in text


# -- generate -------------------------------------------------------------------------------


def test_generate_prints_urls_and_saves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, stdout, stderr = run(
        capsys,
        "generate",
        "a red fox",
        *FAST,
        "--aspect-ratio",
        "16:9",
        "--num-images",
        "2",
        "--model",
        "schnell",
        "--out",
        str(tmp_path),
    )
    assert status == 0, stderr
    urls, paths = stdout.splitlines()[:2], stdout.splitlines()[2:]
    assert all(url.startswith("http://127.0.0.1:") and url.endswith(".png") for url in urls)
    assert len(paths) == 2
    assert all(Path(path).read_bytes().startswith(PNG) for path in paths)
    assert "2 images, cost 0.002" in stderr


def test_generate_with_a_bad_aspect_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    status, stdout, stderr = run(capsys, "generate", "a fox", *FAST, "--aspect-ratio", "5:4")
    assert status == 2
    assert stdout == ""
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith("flux-async: shortapi: aspect_ratio='5:4' is not allowed")
    assert "16:9" in stderr and "Traceback" not in stderr


def test_generate_failed_job(capsys: pytest.CaptureFixture[str]) -> None:
    status, stdout, stderr = run(capsys, "generate", "[fault:fail] a fox", *FAST)
    assert status == 1
    assert stdout == ""
    assert len(stderr.splitlines()) == 1 and "failed" in stderr


# -- errors -----------------------------------------------------------------------------------


def test_missing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a fox\n", encoding="utf-8")
    status, _, stderr = run(capsys, "batch", str(source))
    assert status == 2
    assert stderr == (
        "flux-async: SHORTAPI_KEY is not set; pass --api-key or use --provider fake\n"
    )
    status, _, stderr = run(capsys, "generate", "a fox", "--provider", "piapi")
    assert status == 2
    assert stderr.startswith("flux-async: PIAPI_KEY is not set")


def test_the_key_is_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "sk-do-not-print-4242"
    status, stdout, stderr = run(
        capsys, "generate", "a fox", "--api-key", secret, "--base-url", "ftp://example.com"
    )
    assert status == 2
    assert "base_url" in stderr
    assert secret not in stdout + stderr


def test_unreadable_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, stderr = run(capsys, "batch", "prompts.txt", "--provider", "fake")
    assert status == 2
    assert stderr == "flux-async: cannot read prompts.txt: No such file or directory\n"
    status, _, stderr = run(capsys, "batch", str(tmp_path), "--provider", "fake")
    assert status == 2
    assert "Is a directory" in stderr


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("# only a comment\n\n   \n", encoding="utf-8")
    status, _, stderr = run(capsys, "batch", str(source), "--provider", "fake")
    assert status == 2
    assert stderr.startswith(f"flux-async: {source} has no prompts")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        (["--concurrency", "0"], "--concurrency: must be an integer >= 1, got '0'"),
        (["--concurrency", "many"], "--concurrency: must be an integer >= 1"),
        (["--budget", "abc"], "--budget: must be an amount >= 0"),
        (["--budget", "-1"], "--budget: must be an amount >= 0"),
        (["--timeout", "0"], "--timeout: must be a number of seconds > 0"),
        (["--provider", "dalle"], "--provider: invalid choice: 'dalle'"),
        (["--fake-latency", "2,1"], "--fake-latency: must be SECONDS or LOW,HIGH"),
        (["--fake-faults", "1.5"], "--fake-faults: must be a rate from 0 to 1"),
        (["--webhook-port", "70000"], "--webhook-port: must be a port number"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_invalid_options(
    option: list[str], complaint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a fox\n", encoding="utf-8")
    status, stdout, stderr = run(capsys, "batch", str(source), "--provider", "fake", *option)
    assert status == 2
    assert stdout == ""
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("flux-async: ") and complaint in stderr


def test_options_that_do_not_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, stderr = run(capsys, "generate", "a fox", "--fake-latency", "1")
    assert status == 2 and "--fake-latency needs --provider fake" in stderr
    status, _, stderr = run(capsys, "generate", "a fox", *FAST, "--api-key", "k")
    assert status == 2 and "do not apply to --provider fake" in stderr


def test_webhooks_with_the_fake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"fox {i}\n" for i in range(5)), encoding="utf-8")
    status, _, stderr = run(
        capsys,
        "batch",
        str(source),
        *FAST,
        "--out",
        str(tmp_path / "out"),
        "--webhook-port",
        "0",
        "--timeout",
        "20",
    )
    assert status == 0, stderr
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [row["status"] for row in rows] == ["succeeded"] * 5


def test_bad_webhook_options(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, stderr = run(
        capsys, "generate", "a fox", *FAST, "--webhook-public-url", "ftp://example.com/hooks"
    )
    assert status == 2
    assert stderr.startswith("flux-async: Webhooks.public_url must be an http(s) URL")


def test_help_usage_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, stdout, _ = run(capsys, "--help")
    assert status == 0 and "generate" in stdout and "batch" in stdout
    status, stdout, _ = run(capsys, "batch", "--help")
    assert status == 0 and "--concurrency" in stdout and "--fake-latency" not in stdout
    status, stdout, _ = run(capsys, "--version")
    assert status == 0 and stdout.startswith("flux-async ")
    status, _, stderr = run(capsys)
    assert status == 2 and "required" in stderr


def test_unexpected_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import flux_async.cli

    def explode(*args: object) -> int:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(flux_async.cli, "_generate", explode)
    status, _, stderr = run(capsys, "generate", "a fox", *FAST)
    assert status == 1
    assert stderr == (
        "flux-async: unexpected error: RuntimeError: boom second line "
        "(run with -v for details)\n"
    )
    status, _, stderr = run(capsys, "generate", "a fox", *FAST, "-v")
    assert status == 1
    assert "Traceback" in stderr and "(run with -v" not in stderr


# -- Ctrl-C -----------------------------------------------------------------------------------


def _sigint_by_default() -> None:
    # A shell may start background jobs with SIGINT ignored, and the command (like Python)
    # then leaves it ignored; this test is about what Ctrl-C does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_records_every_line(tmp_path: Path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text(
        "# two hundred foxes\n" + "".join(f"fox number {i}\n" for i in range(200)),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "flux_async.cli", "batch", str(source),
            "--provider", "fake", "--fake-latency", "0.3,2.5", "--concurrency", "40",
            "--out", str(out),
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
    assert "interrupted: cancelling" in stderr

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
    assert "interrupted after" in stdout
    assert f"{statuses['not_started']} not started" in stdout


def test_a_run_cancelled_outright_still_records_every_line(tmp_path: Path) -> None:
    """What a second Ctrl-C does: cancel the run's task, here after the fifth record."""
    from flux_async import PollPolicy, ShortAPI
    from flux_async._cli.batch import run_batch
    from flux_async._cli.inputs import BatchFile
    from flux_async._cli.manifest import Manifest
    from flux_async._cli.progress import NullDisplay, Tally
    from flux_async.testing import FakeProvider

    source = tmp_path / "prompts.jsonl"
    source.write_text(
        "".join(f'{{"prompt": "fox {i}", "num_images": 2}}\n' for i in range(60)),
        encoding="utf-8",
    )

    @contextlib.asynccontextmanager
    async def open_client() -> AsyncIterator[FluxClient]:
        async with FakeProvider(latency=(0.05, 1.0)) as fake:
            poll = PollPolicy(wait_first=0.05, wait_initial=0.05, wait_max=0.2)
            async with FluxClient(ShortAPI("k", base_url=fake.url), poll=poll) as client:
                yield client

    class CancelAfterFive(NullDisplay):
        def __init__(self, tally: Tally) -> None:
            self.tally = tally

        def start(self) -> None:
            self.task = asyncio.current_task()

        def update(self) -> None:
            if self.tally.done == 5:
                assert self.task is not None
                self.task.cancel()

    batch = BatchFile(source)
    try:
        result = asyncio.run(
            run_batch(
                open_client,
                batch.lines(),
                total=batch.total,
                manifest=Manifest(tmp_path / "out" / "manifest.jsonl"),
                out=tmp_path / "out",
                concurrency=20,
                budget=None,
                make_display=CancelAfterFive,
            )
        )
    finally:
        batch.close()
    assert result.interrupted
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert sorted(row["index"] for row in rows) == list(range(60))
    assert sorted(row["line"] for row in rows) == list(range(1, 61))
    statuses = Counter(row["status"] for row in rows)
    assert statuses["succeeded"] >= 5 and statuses["not_started"] > 0, statuses
    assert set(statuses) == {"succeeded", "cancelled", "not_started"}
    assert all("interrupted" in row["error"] for row in rows if row["status"] != "succeeded")
    assert result.tally.done == 60
    # Nothing is left half-written.
    assert not list((tmp_path / "out").glob(".*.part"))
