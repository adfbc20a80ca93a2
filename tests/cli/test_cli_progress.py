"""The batch's counts and displays (`Tally`, rich and plain), and `run_batch` cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cli_helpers import read_manifest
from support import wait_until

from flux_async import Event, FluxClient, PollPolicy, ShortAPI, read_prompts
from flux_async._cli.batch import BatchResult, print_summary, run_batch
from flux_async._cli.manifest import Manifest
from flux_async._cli.progress import NullDisplay, PlainDisplay, Tally
from flux_async.testing import FakeProvider


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _event(kind: str, local_id: str | None) -> Event:
    return Event(kind=kind, local_id=local_id, job_id=None, status=None, provider="x", time=0.0)  # type: ignore[arg-type]


def test_in_flight_counts_jobs_the_provider_accepted() -> None:
    tally = Tally(10)
    for job in ("a", "b", "c"):
        tally.on_event(_event("submitted", job))
    tally.on_event(_event("status", "a"))
    tally.on_event(_event("finished", "a"))
    tally.on_event(_event("finished", "a"))  # told twice: counted once
    tally.on_event(_event("retried", None))
    assert tally.in_flight == 2 and tally.retries == 1
    assert "2 in flight" in tally.stats() and "1 retries" in tally.stats()
    tally.stop()
    assert tally.in_flight == 0


def test_no_eta_until_a_few_jobs_are_done() -> None:
    clock = Clock()
    tally = Tally(100, clock=clock)
    clock.now += 1.0
    tally.count("succeeded", "0.02")  # the quickest job of the first wave
    assert tally.eta() is None and "ETA" not in tally.stats()
    for _ in range(Tally.ETA_AFTER - 1):
        clock.now += 1.0
        tally.count("succeeded", "0.02")
    # 5 done in 5 s: 95 to go at 1 a second.
    assert tally.eta() == pytest.approx(95.0)
    assert "ETA 1m35s" in tally.stats()
    # A small batch gets its ETA once all but none are left.
    small = Tally(2, clock=clock)
    small.count("succeeded", None)
    assert small.eta() is None


def test_progress_and_summary_agree_after_an_interruption() -> None:
    tally = Tally(10)
    for status in (
        ["succeeded"] * 3 + ["failed", "rejected"] + ["cancelled"] * 2 + ["not_started"] * 3
    ):
        tally.count(status, "0.02" if status == "succeeded" else None)
    # Not interrupted: a cancelled or unstarted line is a failure, in both places.
    assert "3 ok, 6 failed, " in tally.stats()
    stream = io.StringIO()
    print_summary(BatchResult(tally, False, Path("m.jsonl"), Path("out")), stream)
    assert "3 succeeded, 6 failed (2 cancelled, 1 failed, 3 not_started)" in stream.getvalue()
    # Interrupted: what Ctrl-C stopped is counted apart, in both places.
    tally.interrupted = True
    tally.stop()
    stats = tally.stats()
    assert stats.startswith("3 ok, 1 failed, 0 in flight, 1 rejected, 2 cancelled, 3 not started")
    assert "ETA" not in stats
    stream = io.StringIO()
    print_summary(BatchResult(tally, True, Path("m.jsonl"), Path("out")), stream)
    assert (
        "3 succeeded, 1 failed, 0 skipped, 1 rejected, 2 cancelled, 3 not started; cost 0.06"
        in stream.getvalue()
    )


def test_plain_display_writes_a_line_an_interval_only_when_the_counts_changed() -> None:
    async def show() -> list[str]:
        stream = io.StringIO()
        tally = Tally(4, clock=Clock())
        display = PlainDisplay(tally, stream, interval=0.01)

        def lines() -> list[str]:
            return stream.getvalue().splitlines()

        display.start()
        await wait_until(lambda: len(lines()) == 1)  # the first tick shows where it starts
        await asyncio.sleep(0.1)  # ten ticks, nothing changed: no line
        assert len(lines()) == 1
        tally.on_event(_event("submitted", "j"))
        await wait_until(lambda: len(lines()) == 2)
        display.note("a message")  # at once, on its own line
        assert len(lines()) == 3
        await asyncio.sleep(0.1)
        await display.stop()  # nothing changed since the last line: no other one
        return lines()

    assert asyncio.run(show()) == [
        "flux-async: 0/4 done: 0 ok, 0 failed, 0 in flight | 0.0 jobs/s | cost 0 | 0.0s",
        "flux-async: 0/4 done: 0 ok, 0 failed, 1 in flight | 0.0 jobs/s | cost 0 | 0.0s",
        "flux-async: a message",
    ]


def test_plain_display_waits_an_interval_and_writes_a_last_line_on_stop() -> None:
    async def show() -> str:
        stream = io.StringIO()
        tally = Tally(2, clock=Clock())
        display = PlainDisplay(tally, stream)  # one a second: no tick in this test
        display.start()
        tally.count("succeeded", "0.02")
        tally.count("failed", None)
        await asyncio.sleep(0.05)
        assert stream.getvalue() == ""
        await display.stop()
        return stream.getvalue()

    assert PlainDisplay.INTERVAL == 1.0
    assert asyncio.run(show()) == (
        "flux-async: 2/2 done: 1 ok, 1 failed, 0 in flight | 0.0 jobs/s | cost 0.02 | 0.0s\n"
    )


def test_rich_progress_display() -> None:
    pytest.importorskip("rich")
    from rich.console import Console

    from flux_async._cli.progress import RichDisplay

    async def show() -> str:
        stream = io.StringIO()
        console = Console(file=stream, force_terminal=True, width=100)
        tally = Tally(4)
        tally.on_event(_event("submitted", "j"))
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


def test_a_run_cancelled_outright_still_records_every_line(tmp_path: Path) -> None:
    """What a second Ctrl-C does: cancel the run's task, here after the fifth record."""
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

    with read_prompts(source) as prompts:
        result = asyncio.run(
            run_batch(
                open_client,
                prompts.lines(),
                total=prompts.count,
                manifest=Manifest(tmp_path / "out" / "manifest.jsonl"),
                out=tmp_path / "out",
                concurrency=20,
                budget=None,
                make_display=CancelAfterFive,
            )
        )
    assert result.interrupted
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert sorted(row["index"] for row in rows) == list(range(60))
    assert sorted(row["line"] for row in rows) == list(range(1, 61))
    statuses = Counter(row["status"] for row in rows)
    assert statuses["succeeded"] >= 5 and statuses["not_started"] > 0, statuses
    assert set(statuses) == {"succeeded", "cancelled", "not_started"}
    assert all("interrupted" in row["error"] for row in rows if row["status"] != "succeeded")
    assert result.tally.done == 60
    assert result.tally.failed == 0  # what Ctrl-C stopped is counted apart
    # Nothing is left half-written.
    assert not list((tmp_path / "out").glob(".*.part"))
