"""The learned job latencies a batch keeps in its journal, so that a repeated or resumed
batch polls well from its first job. Best effort: a journal that cannot hold them leaves the
batch to start cold."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ._errors import FluxError
from ._poll import latency_key, load_latency, save_latency
from ._store import JobStore

__all__ = ["load_journal_latency", "poll_lane_of", "save_journal_latency"]

logger = logging.getLogger("flux_async")


def poll_lane_of(client: object) -> Any:
    """The poll lane that learns the client's latencies (``None``: a launcher without one)."""
    lane = getattr(client, "_poll", None)
    if callable(getattr(lane, "latency_state", None)) and callable(
        getattr(lane, "load_latency", None)
    ):
        return lane
    return None


async def load_journal_latency(lane: Any, provider: str, store: JobStore) -> None:
    """Start the client's latency models from the journal's, where it has learned nothing
    about a model yet (an estimate learned in this process is fresher)."""
    if lane is None or not callable(getattr(store, "load_meta", None)):
        return
    prefix = latency_key(provider, "")
    try:
        saved = await load_latency(store, provider)
    except (FluxError, OSError) as exc:  # best effort: the batch runs cold
        logger.debug("could not read the learned latencies from the journal: %s", exc)
        return
    for key, data in saved.items():
        known = lane.estimate(key[len(prefix) :])
        if known is None or known.samples <= 0:
            lane.load_latency(key, data)


async def save_journal_latency(lane: Any, provider: str, store: JobStore) -> None:
    """Keep what the client learned about its latencies in the journal (best effort: a
    journal that cannot be written says so at its next awaited write)."""
    if lane is None or not callable(getattr(store, "save_meta", None)):
        return
    state: Mapping[str, bytes] = lane.latency_state()
    if not state:
        return
    try:
        await save_latency(store, state, provider)
    except (FluxError, OSError) as exc:
        logger.debug("could not save the learned latencies in the journal: %s", exc)
