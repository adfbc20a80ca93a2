"""`Budget`: the money a batch has committed, kept at or under its limit."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from ._models import JobStatus
from ._registry import Entry

__all__ = ["Budget"]


class Budget:
    """Money a batch has committed, kept at or under ``limit``.

    Committed money is what finished jobs were charged plus a price for every job still in
    flight; a job whose create was ambiguous counts as paid. A job's price is, in order: the
    provider's published price, the caller's ``price_per_job``, the dearest charge reported
    so far in this batch. Until one of them is known, jobs are admitted one at a time (so
    only a single job can exceed the budget, and only if it alone costs more than all of
    it); a price is never guessed as 0.
    """

    def __init__(self, limit: Decimal, price_per_job: Decimal | None) -> None:
        self.limit = limit
        self.price_per_job = price_per_job
        self.committed = Decimal(0)
        self.largest_seen: Decimal | None = None
        self.unpriced = 0  # jobs in flight admitted before any price was known
        self.settled = asyncio.Event()

    def price(self, provider: Any, prepared: Any) -> Decimal | None:
        published: Decimal | None = provider.estimate_cost(prepared)
        if published is not None:
            return published
        if self.price_per_job is not None:
            return self.price_per_job
        return self.largest_seen

    async def admit(self, provider: Any, prepared: Any) -> tuple[bool, Decimal | None]:
        """Wait until a job may go out; return (within budget, the price reserved for it)."""
        estimate = self.price(provider, prepared)
        while estimate is None and self.unpriced:
            # No price known yet: one job at a time until the first charge is reported.
            self.settled.clear()
            await self.settled.wait()
            estimate = self.price(provider, prepared)
        if estimate is None:
            self.unpriced += 1
            return True, None
        if self.committed + estimate > self.limit:
            return False, estimate
        self.committed += estimate
        return True, estimate

    def settle(self, estimate: Decimal | None, entry: Entry | None) -> None:
        """Replace a job's reserved price by what it really cost, once it ended."""
        if estimate is None:
            self.unpriced -= 1
        if entry is None or (entry.job_id is None and entry.status is JobStatus.FAILED):
            actual = Decimal(0)  # refused before any job existed: nothing was charged
        elif entry.refunded:
            actual = Decimal(0)
        elif entry.cost is not None:
            actual = entry.cost
            self.largest_seen = max(self.largest_seen or actual, actual)
        else:
            # The charge was never reported (ambiguous create, cancelled, timed out): assume
            # the job was paid for at its price, when one is known.
            actual = estimate if estimate is not None else (self.largest_seen or Decimal(0))
        self.committed += actual - (estimate or Decimal(0))
        self.settled.set()
