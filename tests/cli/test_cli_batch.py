"""``flux-async batch``, run in-process against the bundled fake provider over loopback."""

from __future__ import annotations

import io
import json
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import (
    EXAMPLES,
    FAST,
    MANIFEST_KEYS,
    PNG,
    against,
    by_line,
    example_prompts,
    read_manifest,
)
from conftest import Run

from flux_async._cli.progress import PlainDisplay
from flux_async.testing import FakeProvider


def test_batch_of_the_example_prompts(tmp_path: Path, run: Run) -> None:
    out = tmp_path / "out"
    status, stdout, stderr = run("batch", str(EXAMPLES / "prompts.txt"), *FAST, "--out", str(out))
    assert status == 0, stderr

    prompts = example_prompts()
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


def test_the_example_prompts_pay_only_for_real_prompts(
    tmp_path: Path, run: Run, fake: FakeProvider
) -> None:
    """Comments and blank lines are never sent; a prompt's whitespace is never sent."""
    source = tmp_path / "prompts.txt"
    text = (EXAMPLES / "prompts.txt").read_text(encoding="utf-8")
    # Indented and trailing whitespace, CRLF line ends: none of it reaches the provider.
    source.write_bytes("".join(f"  {line}\t \r\n" for line in text.splitlines()).encode("utf-8"))
    status, _, stderr = run(
        "batch", str(source), *against(fake), "--out", str(tmp_path / "out"), "-q"
    )
    assert status == 0, stderr
    prompts = example_prompts()
    assert fake.create_attempts == len(prompts)
    assert dict(fake.creates_per_prompt) == dict.fromkeys(prompts.values(), 1)


def test_batch_of_the_example_requests(tmp_path: Path, run: Run) -> None:
    out = tmp_path / "out"
    status, _, stderr = run(
        "batch", str(EXAMPLES / "requests.jsonl"), *FAST, "--out", str(out), "-q"
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


def test_bad_jsonl_lines_are_rejected_shown_and_the_batch_goes_on(tmp_path: Path, run: Run) -> None:
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
                '{"prompt": "  a green fox ", "num_images": 2}',  # 9
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    status, stdout, stderr = run("batch", str(source), *FAST, "--out", str(out))
    assert status == 1

    rows = by_line(read_manifest(out / "manifest.jsonl"))
    assert sorted(rows) == [1, 3, 4, 5, 7, 8, 9]
    assert sorted(row["index"] for row in rows.values()) == list(range(7))
    assert rows[1]["status"] == rows[9]["status"] == "succeeded"
    assert rows[9]["prompt"] == "a green fox"
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
    # Each rejected line says why on the terminal, one line each, as the manifest does.
    shown = [line for line in stderr.splitlines() if line.startswith("flux-async: rejected ")]
    assert sorted(shown) == sorted(
        f"flux-async: rejected {rows[number]['error']}" for number in (3, 4, 5, 7, 8)
    )


def test_many_rejected_lines_are_shown_up_to_a_cap(tmp_path: Path, run: Run) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text(
        '{"prompt": "a fox"}\n' + "".join(f'{{"oops": {i}}}\n' for i in range(25)),
        encoding="utf-8",
    )
    status, stdout, stderr = run("batch", str(source), *FAST, "--out", str(tmp_path / "o"), "-q")
    assert status == 1
    shown = [line for line in stderr.splitlines() if line.startswith("flux-async: rejected ")]
    assert len(shown) == 20
    assert all(line.endswith('missing "prompt"') for line in shown)
    assert "... and 5 more rejected lines (see " in stderr
    assert "1 succeeded, 0 failed, 0 skipped, 25 rejected" in stdout


def test_a_text_file_whose_first_line_starts_with_a_brace_is_text(
    tmp_path: Path, run: Run, fake: FakeProvider
) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text('{curly} braces on a sign\n{"prompt": "x"} as a prompt\na fox\n')
    status, _, stderr = run("batch", str(source), *against(fake), "--out", str(tmp_path / "o"))
    assert status == 0, stderr
    assert dict(fake.creates_per_prompt) == {
        "{curly} braces on a sign": 1,
        '{"prompt": "x"} as a prompt': 1,
        "a fox": 1,
    }


def test_prompts_from_stdin(tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "# from a pipe\na red fox\n\n  a lighthouse at dusk  \n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    out = tmp_path / "out"
    status, stdout, stderr = run("batch", "-", *FAST, "--out", str(out))
    assert status == 0, stderr
    rows = by_line(read_manifest(out / "manifest.jsonl"))
    assert {n: row["prompt"] for n, row in rows.items()} == {
        2: "a red fox",
        4: "a lighthouse at dusk",
    }
    assert "2 succeeded" in stdout


def test_jsonl_from_stdin(tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    text = '{"prompt": "a red fox", "num_images": 2}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    status, _, stderr = run("batch", "-", *FAST, "--out", str(tmp_path), "-q")
    assert status == 0, stderr
    (row,) = read_manifest(tmp_path / "manifest.jsonl")
    assert row["prompt"] == "a red fox" and len(row["files"]) == 2


@pytest.mark.parametrize(
    "content",
    [
        PNG + b"\x00\x00\x00\rIHDR\x00\x00\x00\x10",  # a PNG header
        b"a fox\n\xff\xfe not utf-8\n",
        b"a fox\nanother\x00fox\n",
    ],
    ids=["png", "not-utf8", "nul"],
)
def test_a_file_that_is_not_text_sends_nothing(
    content: bytes, tmp_path: Path, run: Run, fake: FakeProvider
) -> None:
    source = tmp_path / "some.png"
    source.write_bytes(content)
    out = tmp_path / "out"
    status, stdout, stderr = run("batch", str(source), *against(fake), "--out", str(out))
    assert status == 2
    assert stdout == ""
    assert stderr.startswith(f"flux-async: {source} is not a text file: line ")
    assert len(stderr.splitlines()) == 1
    assert fake.create_attempts == 0
    assert not out.exists()


@pytest.mark.parametrize(
    ("fake_as", "job_id"),
    [
        ("shortapi", r"[0-9a-f]{24}"),
        ("piapi", r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
        ("aimlapi", r"aimlapi-[0-9a-f]+"),
    ],
)
def test_the_fake_speaks_each_provider(fake_as: str, job_id: str, tmp_path: Path, run: Run) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a red fox\na lighthouse\n", encoding="utf-8")
    out = tmp_path / "out"
    status, _, stderr = run("batch", str(source), *FAST, "--fake-as", fake_as, "--out", str(out))
    assert status == 0, stderr
    rows = read_manifest(out / "manifest.jsonl")
    assert [row["status"] for row in rows] == ["succeeded"] * 2
    # Each API names its jobs its own way: the adapter of --fake-as did the talking.
    assert all(re.fullmatch(job_id, row["job_id"]) for row in rows), rows
    assert all(Path(row["files"][0]).read_bytes().startswith(PNG) for row in rows)


def test_failed_and_timed_out_jobs(tmp_path: Path, run: Run) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text(
        "a fine fox\n[fault:fail] a failing fox\n[fault:never-finish] an endless fox\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    manifest = tmp_path / "elsewhere" / "runs.jsonl"
    status, stdout, _ = run(
        "batch",
        str(source),
        *FAST,
        "--out",
        str(out),
        "--manifest",
        str(manifest),
        "--timeout",
        "0.5",
    )
    assert status == 1
    rows = by_line(read_manifest(manifest))
    assert [rows[n]["status"] for n in (1, 2, 3)] == ["succeeded", "failed", "timed_out"]
    assert rows[2]["job_id"] and "failed" in rows[2]["error"]
    assert rows[3]["job_id"] and "0.5s" in rows[3]["error"]
    assert "\n" not in rows[2]["error"]
    assert "2 failed (1 failed, 1 timed_out)" in stdout
    assert not (out / "manifest.jsonl").exists()


def test_budget_skips_the_rest(tmp_path: Path, run: Run) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"fox number {i}\n" for i in range(8)), encoding="utf-8")
    out = tmp_path / "out"
    status, stdout, _ = run("batch", str(source), *FAST, "--out", str(out), "--budget", "0.05")
    assert status == 1
    rows = read_manifest(out / "manifest.jsonl")
    assert len(rows) == 8
    statuses = Counter(row["status"] for row in rows)
    assert statuses == {"succeeded": 2, "skipped": 6}
    skipped = [row for row in rows if row["status"] == "skipped"]
    assert all("budget" in row["error"] and row["job_id"] is None for row in skipped)
    assert "2 succeeded, 0 failed, 6 skipped, 0 rejected; cost 0.04" in stdout


def test_price_per_job_sets_what_the_budget_counts(tmp_path: Path, run: Run) -> None:
    """PiAPI publishes no price: --price-per-job is what the budget reserves per job."""
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"fox number {i}\n" for i in range(10)), encoding="utf-8")
    piapi = [*FAST, "--fake-as", "piapi", "--budget", "300000", "-q"]
    # No price given: one job at a time until the first charge (150000 on the fake) is known.
    status, stdout, _ = run("batch", str(source), *piapi, "--out", str(tmp_path / "a"))
    assert status == 1
    assert "2 succeeded, 0 failed, 8 skipped" in stdout
    # A dearer price per job given: the budget holds room for one job only.
    status, stdout, _ = run(
        "batch", str(source), *piapi, "--price-per-job", "200000", "--out", str(tmp_path / "b")
    )
    assert status == 1
    assert "1 succeeded, 0 failed, 9 skipped" in stdout
    rows = read_manifest(tmp_path / "b" / "manifest.jsonl")
    assert sum(int(row["cost"]) for row in rows if row["cost"]) <= 300000


def test_orphan_window_bounds_the_wait_for_a_lost_create(tmp_path: Path, run: Run) -> None:
    """A create whose answer was lost, and whose job never calls home, ends unknown soon."""
    source = tmp_path / "prompts.txt"
    source.write_text("[fault:drop] [fault:no-callback] a lost fox\na fine fox\n")
    started = time.monotonic()
    status, stdout, stderr = run(
        "batch",
        str(source),
        *FAST,
        "--webhook-port",
        "0",
        "--orphan-window",
        "0.2",
        "--out",
        str(tmp_path / "out"),
    )
    elapsed = time.monotonic() - started
    assert status == 1, stderr
    rows = by_line(read_manifest(tmp_path / "out" / "manifest.jsonl"))
    assert rows[1]["status"] == "unknown" and rows[2]["status"] == "succeeded"
    assert elapsed < 30  # the default window is 120 s
    assert "1 failed (1 unknown)" in stdout


def test_plain_progress_on_stderr(
    tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How often a line is written is PlainDisplay's own test (test_cli_progress.py); here a
    # short interval gives several lines from a batch of well under a second.
    monkeypatch.setattr(PlainDisplay, "INTERVAL", 0.02)
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"fox {i}\n" for i in range(30)), encoding="utf-8")
    status, stdout, stderr = run(
        "batch",
        str(source),
        "--provider",
        "fake",
        "--fake-latency",
        "0.1,0.2",
        "--concurrency",
        "8",
        "--out",
        str(tmp_path / "out"),
    )
    assert status == 0
    # Not a terminal: plain status lines, one an interval, and a last one at the end.
    progress = [line for line in stderr.splitlines() if "/30 done" in line]
    assert len(progress) >= 2, stderr
    assert all(line.startswith("flux-async: ") for line in progress)
    assert "in flight" in progress[0] and "jobs/s" in progress[0] and "cost" in progress[0]
    # "in flight" counts jobs, never more than may be in flight at once.
    in_flight = [int(re.search(r"(\d+) in flight", line)[1]) for line in progress]  # type: ignore[index]
    assert max(in_flight) <= 8 and in_flight[-1] == 0
    assert progress[-1].startswith("flux-async: 30/30 done: 30 ok, 0 failed, 0 in flight")
    assert "30 succeeded, 0 failed" in stdout
