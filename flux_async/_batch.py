"""`FluxClient.generate_many`: thousands of inputs, lazily, one outcome each.

The input is consumed one item at a time, and only ``concurrency`` jobs are outstanding at
once, so memory does not grow with the input's length. Every input yields exactly one
`Outcome`, failures included; leaving the loop early cancels what is outstanding.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from ._config import Limits
from ._errors import BudgetExceededError, ConfigurationError, FluxError, ValidationError
from ._images import Uploader, resolve_image_input
from ._models import Generation, GenerationRequest, JobStatus, Outcome, build_request
from ._registry import Entry
from .providers._base import Prepared, Provider

__all__ = ["BatchInput", "JobLauncher", "check_batch_arguments", "generate_many"]

BatchInput = str | Mapping[str, Any] | GenerationRequest

_DONE = object()
_LIMITS = Limits()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


async def _items(requests: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(requests, AsyncIterable):
        async for item in requests:
            yield item
    else:
        for item in requests:
            yield item


class JobLauncher(Protocol):
    """What a batch needs from the client: start jobs, wait for them, cancel, download."""

    @property
    def provider(self) -> Provider: ...

    async def begin(self, request: GenerationRequest, prepared: Prepared) -> Entry:
        """Allocate a job (waiting for a slot) and start its create; return at once."""

    async def result(self, entry: Entry) -> Generation:
        """Wait for the job to end; return its generation or raise its error."""

    def cancel(self, entry: Entry, why: str) -> bool:
        """End the job ``cancelled``; return whether it was still open."""

    async def download(
        self, generation: Generation, directory: str | os.PathLike[str], *, prefix: str = ""
    ) -> tuple[Path, ...]:
        """Save the generation's images into ``directory``."""


def check_batch_arguments(
    concurrency: Any, budget: Any, price_per_job: Any, default_concurrency: int
) -> tuple[int, Decimal | None, Decimal | None]:
    """Validate `generate_many`'s arguments; return (concurrency, budget, price_per_job).

    Raises:
        ConfigurationError: naming the argument and what it accepts.
    """
    if concurrency is None:
        concurrency = default_concurrency
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    return concurrency, _money("budget", budget), _money("price_per_job", price_per_job)


def _money(name: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(str(value))
    except ArithmeticError as exc:
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
    return amount


def _to_request(client: JobLauncher, item: Any) -> GenerationRequest:
    name = client.provider.name
    if isinstance(item, GenerationRequest):
        return item
    if isinstance(item, str):
        return build_request(name, item, {})
    if isinstance(item, Mapping):
        params = dict(item)
        if "prompt" not in params:
            raise ValidationError(
                f"{name}: a request mapping needs a 'prompt'", provider=name, field="prompt"
            )
        return build_request(name, params.pop("prompt"), params)
    raise ValidationError(
        f"{name}: each input must be a prompt string, a mapping with 'prompt', or a "
        f"GenerationRequest; got {type(item).__name__}",
        provider=name,
        field="request",
        value=item,
    )


class _Budget:
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


async def generate_many(
    client: JobLauncher,
    requests: Iterable[BatchInput] | AsyncIterable[BatchInput],
    *,
    concurrency: int,
    budget: Decimal | None,
    download_to: str | os.PathLike[str] | None,
    price_per_job: Decimal | None = None,
    uploader: Uploader | None = None,
    limits: Limits = _LIMITS,
) -> AsyncGenerator[Outcome, None]:
    """Yield one `Outcome` per input, in the order the jobs finish."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=concurrency)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    entries: dict[int, Entry] = {}
    money = _Budget(budget, price_per_job) if budget is not None else None

    async def finish(outcome: Outcome) -> None:
        await queue.put(outcome)

    async def run_one(index: int, item: Any, request: GenerationRequest, prepared: Any,
                      estimate: Decimal | None, started: float) -> None:
        entry: Entry | None = None
        generation: Generation | None = None
        error: BaseException | None = None
        files: tuple[Any, ...] = ()
        try:
            entry = await client.begin(request, prepared)
            entries[index] = entry
            generation = await client.result(entry)
            if download_to is not None:
                files = await client.download(generation, download_to, prefix=f"{index:06d}-")
        except FluxError as exc:
            error = exc
        except BaseException:
            slots.release()
            raise
        finally:
            entries.pop(index, None)
            if money is not None:
                money.settle(estimate, entry)
        job = entry.snapshot() if entry is not None else None
        status = job.status.value if job is not None else JobStatus.FAILED.value
        try:
            await finish(
                Outcome(
                    index=index,
                    request=item,
                    status=status,
                    generation=generation,
                    error=error,
                    job=job,
                    cost=job.cost if job is not None else None,
                    files=files,
                    started_at=started,
                    finished_at=time.monotonic(),
                )
            )
        finally:
            # The slot is freed only once the outcome is queued: a slow consumer slows
            # submissions down instead of piling up finished jobs.
            slots.release()

    async def produce() -> None:
        stop: BudgetExceededError | None = None
        try:
            index = -1
            async for item in _items(requests):
                index += 1
                started = time.monotonic()
                if stop is not None:
                    await finish(_outcome(index, item, "skipped", stop, started))
                    continue
                try:
                    request = _to_request(client, item)
                    request = await resolve_image_input(request, client.provider, uploader, limits)
                    prepared = client.provider.prepare(request)
                except ValidationError as exc:
                    await finish(_outcome(index, item, "rejected", exc, started))
                    continue
                await slots.acquire()
                estimate: Decimal | None = None
                if money is not None:
                    admitted, estimate = await money.admit(client.provider, prepared)
                    if not admitted:
                        slots.release()
                        stop = BudgetExceededError(
                            f"budget of {money.limit} reached ({money.committed} committed; "
                            f"the next job would cost about {estimate}): not submitted",
                            provider=client.provider.name,
                        )
                        await finish(_outcome(index, item, "skipped", stop, started))
                        continue
                task = asyncio.get_running_loop().create_task(
                    run_one(index, item, request, prepared, estimate, started)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.wait(list(tasks))
        except Exception as exc:  # the caller's iterable failed: hand it over to re-raise
            await queue.put(_Failed(exc))
        else:
            await queue.put(_DONE)
        # Cancelled: nobody reads the queue any more, so nothing more is put into it.

    producer = asyncio.get_running_loop().create_task(produce())
    try:
        while True:
            outcome = await queue.get()
            if outcome is _DONE:
                break
            if isinstance(outcome, _Failed):
                raise outcome.error
            yield outcome
        await producer
    finally:
        if not producer.done():
            producer.cancel()
        for entry in list(entries.values()):
            client.cancel(entry, "the batch loop was left before the job finished")
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(producer, *tasks, return_exceptions=True)


def _outcome(index: int, item: Any, status: str, error: BaseException, started: float) -> Outcome:
    return Outcome(
        index=index,
        request=item,
        status=status,
        error=error,
        started_at=started,
        finished_at=time.monotonic(),
    )
