"""Logging: each job's life on ``flux_async.jobs`` at DEBUG (submitted, polled, status
changes, finished) and retries at INFO, every line with the local and the provider id; no
secret in any record (API key, callback token, PiAPI webhook secret), webhooks on or off;
nothing formatted while DEBUG is off. Over loopback against the fake."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from urllib.parse import urlsplit

import pytest
from support import FAST_POLL, FAST_RETRY

from flux_async import Event, FluxClient, PiAPI, ShortAPI, Webhooks
from flux_async.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

SECRET_KEY = "sk-live-7f3c9e1a5b2d4f6081a3c5e7d9f1b2c4"
JOBS = "flux_async.jobs"
#: The ``[fault:429]`` prompts' 429s ask for no wait: what is logged is the subject, not pacing.
NO_WAIT = Faults(retry_after=0)


def _kind(message: str) -> str:
    body = message.split("): ", 1)[1]
    if " -> " in body:
        return "status"
    for kind in ("submitted", "polled", "finished"):
        if body.startswith(kind):
            return kind
    if body.startswith("poll ") and " failed" in body:
        return "poll failed"
    if body.endswith("retrying"):
        return "retried"
    raise AssertionError(f"not a job life line: {message}")


async def test_every_life_event_of_every_job_is_one_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flux_async")
    events: list[Event] = []
    prompts = ["a pear", "a plum", "a fig [fault:429]", "a lime [fault:fail]"]
    async with FakeProvider(
        latency=(0.05, 0.1), seed=3, api_key=SECRET_KEY, faults=NO_WAIT
    ) as fake:
        provider = ShortAPI(SECRET_KEY, base_url=fake.url)
        async with FluxClient(provider, poll=FAST_POLL, retry=FAST_RETRY, seed=0) as client:
            client.subscribe(events.append)
            outcomes = [outcome async for outcome in client.generate_many(prompts)]
    assert sorted(outcome.status for outcome in outcomes) == ["failed"] + ["succeeded"] * 3

    lines: dict[str, Counter[str]] = defaultdict(Counter)
    for record in caplog.records:
        if record.name != JOBS:
            continue
        message = record.getMessage()
        local_id = message.split()[1]
        kind = _kind(message)
        lines[local_id][kind] += 1
        assert record.levelno == (logging.INFO if kind == "retried" else logging.DEBUG)

    expected: dict[str, Counter[str]] = defaultdict(Counter)
    for event in events:
        if event.kind in ("submitted", "status", "finished", "retried"):
            assert event.local_id is not None
            expected[event.local_id][event.kind] += 1
    for outcome in outcomes:
        assert outcome.job is not None
        expected[outcome.job.local_id]["polled"] += outcome.job.polls
    assert lines == expected
    for outcome in outcomes:
        assert outcome.job is not None
        counts = lines[outcome.job.local_id]
        assert counts["submitted"] == counts["finished"] == 1
        assert counts["polled"] == outcome.job.polls >= 1
        # A status line appears only when a poll saw the job between submitted and its end;
        # a job that was done at its first poll goes straight to "finished".
        if outcome.job.polls > 1:
            assert counts["status"] >= 1
    assert sum(counts["retried"] for counts in lines.values()) == 1  # the 429'd create

    # Every line names the job by both ids (the provider's once it gave one).
    by_local = {outcome.job.local_id: outcome.job.id for outcome in outcomes if outcome.job}
    for record in caplog.records:
        if record.name == JOBS and _kind(record.getMessage()) != "retried":
            local_id = record.getMessage().split()[1]
            assert f"(shortapi {by_local[local_id]})" in record.getMessage()
    finished = [r.getMessage() for r in caplog.records if "finished failed" in r.getMessage()]
    assert len(finished) == 1 and "cost 0" in finished[0]  # refunded
    assert SECRET_KEY not in caplog.text


@pytest.mark.parametrize("provider_name", ["shortapi", "piapi"])
async def test_no_secret_in_any_record_with_webhooks_on(
    provider_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, aiohttp's, asyncio's
    async with FakeProvider(
        latency=(0.02, 0.06), seed=5, api_key=SECRET_KEY, faults=NO_WAIT
    ) as fake:
        factory = ShortAPI if provider_name == "shortapi" else PiAPI
        client = FluxClient(
            factory(SECRET_KEY, base_url=fake.url),
            webhooks=Webhooks(grace=0.2),
            poll=FAST_POLL,
            retry=FAST_RETRY,
            seed=0,
        )
        async with client:
            prompts = ["one", "two [fault:dup-callback]", "three [fault:429]", "four [fault:fail]"]
            outcomes = [outcome async for outcome in client.generate_many(prompts)]
            await fake.wait_callbacks_idle()
    assert sum(outcome.ok for outcome in outcomes) == 3
    secrets = {SECRET_KEY}
    for job in fake.jobs.values():
        assert job.callback_url is not None
        secrets.add(urlsplit(job.callback_url).path.rsplit("/", 1)[-1])  # the token
        if job.callback_secret is not None:
            secrets.add(job.callback_secret)
    assert len(secrets) >= 4 and all(len(secret) >= 16 for secret in secrets)
    assert provider_name == "shortapi" or any(job.callback_secret for job in fake.jobs.values())
    assert fake.callbacks_sent  # callbacks were delivered, so the receiver logged too
    assert any(record.name == JOBS for record in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + str(record.args) + (record.exc_text or "")
        for secret in secrets:
            assert secret not in text, (record.name, text)
        for job in fake.jobs.values():
            assert job.callback_url not in text


async def test_no_log_call_is_made_while_debug_is_off(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    jobs_logger = logging.getLogger(JOBS)
    monkeypatch.setattr(jobs_logger, "debug", lambda message, *args: calls.append(message))
    for level in (logging.INFO, logging.DEBUG):
        caplog.set_level(level, logger="flux_async")
        async with FluxClient(
            ShortAPI("key", base_url=fake.url), poll=FAST_POLL, retry=FAST_RETRY, seed=0
        ) as client:
            await client.generate(f"a fox at level {level}")
        if level == logging.INFO:
            assert calls == []  # the isEnabledFor check comes first: no call, no formatting
    assert len(calls) >= 3  # submitted, polled, ..., finished
