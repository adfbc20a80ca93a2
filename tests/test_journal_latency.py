"""A journaled batch keeps what its client learned about job latencies in the journal, so a
repeated or resumed batch polls well from its first job (loopback, real SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import FAST_RETRY, KEY

import flux_async._batch
from flux_async import FluxClient, ShortAPI
from flux_async._latency import LatencyEstimate
from flux_async._poll import latency_key, load_latency
from flux_async.stores.sqlite import SQLiteJournal
from flux_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

PROMPTS = [f"latency prompt {i}" for i in range(12)]
MODEL_KEY_PREFIX = latency_key("shortapi", "")


def learning_client(fake: FakeProvider) -> FluxClient:
    """A client with the default (learned) poll schedule."""
    return FluxClient(ShortAPI(KEY, base_url=fake.url), retry=FAST_RETRY, seed=0)


async def run(client: FluxClient, prompts: list[str], **kwargs: Any) -> list[Any]:
    return [o async for o in client.generate_many(prompts, **kwargs)]


def samples(data: bytes) -> float:
    return LatencyEstimate.from_bytes(data).samples


async def test_a_repeated_batch_starts_with_the_latency_learned_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.sqlite"
    async with FakeProvider(latency=(0.05, 0.15), seed=21) as fake:
        async with learning_client(fake) as client:
            first = await run(client, PROMPTS, journal=path)
            learned = client.latency_state()
        assert all(o.ok for o in first) and learned
        async with SQLiteJournal(path) as journal:
            assert await load_latency(journal, "shortapi") == learned

        (key,) = learned
        model = key[len(MODEL_KEY_PREFIX) :]
        async with learning_client(fake) as client:
            assert client.latency_estimate(model) is None  # nothing learned, nothing loaded
            at_submit: list[float] = []

            def note(event: Any) -> None:
                estimate = client.latency_estimate(model)
                at_submit.append(estimate.samples if estimate is not None else 0.0)

            client.subscribe(note, kinds={"submitted"})
            second = await run(client, PROMPTS, journal=path, new_batch=True)
        assert all(o.ok and not o.resumed for o in second)
        # From the first job of the second batch on (before any of its jobs finished),
        # the client polled with the estimate the first batch learned.
        assert at_submit[0] == samples(learned[key]) > 0


async def test_a_resumed_batch_starts_warm_and_the_estimate_is_saved_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Saved while the batch runs (here after every outcome), not only at its end: a batch
    # killed midway leaves what it learned for its resume.
    monkeypatch.setattr(flux_async._batch, "_SAVE_LATENCY_EVERY", 0.0)
    path = tmp_path / "run.sqlite"
    async with FakeProvider(latency=(0.05, 0.15), seed=22) as fake:
        async with SQLiteJournal(path) as journal, learning_client(fake) as client:
            saved_during: dict[str, bytes] = {}
            async for outcome in client.generate_many(PROMPTS[:6], journal=journal):
                assert outcome.ok
                if not saved_during:
                    saved_during = await load_latency(journal, "shortapi")
        assert saved_during and all(samples(data) > 0 for data in saved_during.values())

        (key,) = saved_during
        model = key[len(MODEL_KEY_PREFIX) :]
        async with learning_client(fake) as client:
            at_submit: list[float] = []
            client.subscribe(
                lambda event: at_submit.append(
                    getattr(client.latency_estimate(model), "samples", 0.0)
                ),
                kinds={"submitted"},
            )
            # The same batch with more inputs: the first six come from the journal.
            outcomes = await run(client, PROMPTS, journal=path)
        assert sum(o.resumed for o in outcomes) == 6
        assert all(o.ok for o in outcomes)
        assert at_submit and at_submit[0] > 0


async def test_an_estimate_learned_in_this_process_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    async with FakeProvider(latency=(0.05, 0.15), seed=23) as fake:
        async with learning_client(fake) as client:
            await run(client, PROMPTS[:3], journal=path)
        async with learning_client(fake) as client:
            await run(client, PROMPTS)  # no journal: learns from 12 jobs
            ((key, fresh),) = client.latency_state().items()
            await run(client, PROMPTS[:3], journal=path, new_batch=True)
            model = key[len(MODEL_KEY_PREFIX) :]
            estimate = client.latency_estimate(model)
            # It kept learning from its own estimate (12 jobs and more), not the journal's 3.
            assert estimate is not None and estimate.samples > samples(fresh)
