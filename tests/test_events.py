"""`EventBus`: delivery, filters, the logging subscriber, and a failing subscriber."""

from __future__ import annotations

import logging
import time

import pytest

from flux_async import Event, JobStatus
from flux_async._events import EventBus
from flux_async._registry import Registry


def test_status_changes_reach_subscribers_with_a_clock_of_our_choice() -> None:
    bus = EventBus("shortapi", clock=lambda: 42.0)
    registry = Registry(clock=time.time, on_change=bus.on_change)
    seen: list[Event] = []
    stop = bus.subscribe(seen.append)
    entry = registry.allocate("shortapi", "flux")
    registry.accept(entry, "job-1")
    registry.advance(entry, JobStatus.RUNNING)
    registry.advance(entry, JobStatus.SUCCEEDED)
    assert [(e.kind, e.job_id, e.time) for e in seen] == [
        ("submitted", "job-1", 42.0),
        ("status", "job-1", 42.0),
        ("finished", "job-1", 42.0),
    ]
    stop()
    bus.emit("retried", entry, "again")
    assert len(seen) == 3


def test_a_filtered_subscriber_gets_only_its_kinds() -> None:
    bus = EventBus("piapi", log=False)
    seen: list[str] = []
    bus.subscribe(lambda event: seen.append(event.kind), kinds={"rate_limited"})
    assert not bus  # nobody listens to every kind
    bus.emit("submitted", None)
    bus.emit("rate_limited", None, "creates paused for 1.00s")
    assert seen == ["rate_limited"]


def test_retries_are_logged_by_the_default_subscriber(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus("shortapi")
    with caplog.at_level(logging.INFO, logger="flux_async"):
        bus.emit("retried", None, "HTTP 503")
        bus.emit("submitted", None)
    assert "retrying" in caplog.text and "HTTP 503" in caplog.text
    assert len(caplog.records) == 1


def test_a_failing_subscriber_is_logged_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus("shortapi", log=False)
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    bus.subscribe(lambda event: seen.append(event.kind))
    with caplog.at_level(logging.ERROR, logger="flux_async"):
        bus.emit("downloaded", None, "/tmp/x.png")
    assert seen == ["downloaded"] and "subscriber" in caplog.text


# -- FluxClient.subscribe(kinds=...), over loopback against the fake ---------------------------


@pytest.mark.anyio
async def test_client_subscribers_choose_their_kinds_and_limits_reach_only_those_asking() -> None:
    from flux_async import ConfigurationError, FluxClient, ShortAPI
    from flux_async.testing import FakeProvider, Faults

    everything: list[Event] = []
    finished: list[Event] = []
    limits: list[Event] = []
    # Many 429s at once (the first 4 of 8 creates, sent together): the client backs off its
    # create rate, and says so.
    jobs = 8
    faults = Faults(rate_limit_first_creates=4, retry_after=0)
    async with FakeProvider(latency=(0.01, 0.03), faults=faults, seed=5) as fake:
        async with FluxClient(ShortAPI("k", base_url=fake.url)) as client:
            with pytest.raises(ConfigurationError, match=r"unknown event kind\(s\) 'finish'"):
                client.subscribe(finished.append, kinds={"finish"})  # type: ignore[arg-type]
            client.subscribe(everything.append)
            client.subscribe(finished.append, kinds={"finished"})
            client.subscribe(limits.append, kinds={"limits"})
            outcomes = [o async for o in client.generate_many([f"p{i}" for i in range(jobs)])]
    assert all(outcome.ok for outcome in outcomes)
    assert [event.kind for event in finished] == ["finished"] * jobs
    assert "limits" not in {event.kind for event in everything}  # no job: not for per-job ones
    assert {"submitted", "finished", "retried"} <= {event.kind for event in everything}
    assert limits and all(event.kind == "limits" and event.local_id is None for event in limits)
    assert all(event.detail and "creates_per_second=" in event.detail for event in limits)
