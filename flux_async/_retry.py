"""Sans-IO retry decisions: failure phases, Retry-After, backoff waits, budgets, rate limits.

Nothing here sleeps or touches a socket; the client asks and then acts. This is the only
module that imports `backoff`.
"""

from __future__ import annotations

import enum
import itertools
import math
import random
from collections.abc import Sequence
from typing import NamedTuple

import backoff

from ._config import RetryPolicy
from ._errors import Phase, RateLimitedError, RequestError

__all__ = [
    "CreateAction",
    "CreateDecision",
    "RetryBudget",
    "TokenBucket",
    "decide_create_failure",
    "is_resend_safe",
    "jittered",
    "retry_wait",
    "wait_table",
]


def is_resend_safe(operation: str, phase: Phase) -> bool:
    """Whether a request that failed in ``phase`` may be sent again.

    A create costs money and no provider offers an idempotency key, so it is resent only
    when it provably did no work. Queries are read-only and are resent unless the answer
    was a definitive no.
    """
    if operation == "create":
        return phase in (Phase.NOT_SENT, Phase.REFUSED)
    return phase is not Phase.DEFINITIVE


def wait_table(
    wait_initial: float, wait_exp_base: float, wait_max: float, size: int = 48
) -> tuple[float, ...]:
    """Return the first ``size`` waits of `backoff.expo` for these parameters.

    Jobs keep only an attempt counter and index this shared table, instead of holding a
    generator each (tens of thousands of jobs may be outstanding).
    """
    generator = backoff.expo(base=wait_exp_base, factor=wait_initial, max_value=wait_max)
    next(generator)  # backoff's wait generators are primed with one next() before use
    return tuple(float(wait) for wait in itertools.islice(generator, size))


def jittered(table: Sequence[float], attempt: int, rng: random.Random | None) -> float:
    """Return the ``attempt``-th wait of ``table`` with full jitter (``rng=None``: none)."""
    wait = table[min(attempt, len(table) - 1)]
    return rng.uniform(0.0, wait) if rng is not None else wait


def retry_wait(
    error: RequestError,
    *,
    attempt: int,
    policy: RetryPolicy,
    table: Sequence[float],
    rng: random.Random | None,
) -> float | None:
    """Return seconds to wait before resending after ``error``, or ``None`` to give up.

    ``attempt`` counts the tries made so far (1 after the first). The retry budget is not
    consulted here; see `RetryBudget`.
    """
    if attempt >= policy.attempts or not is_resend_safe(error.operation, error.phase):
        return None
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        if retry_after > policy.retry_after_max:
            return None
        return float(retry_after)
    return jittered(table, attempt - 1, rng)


class RetryBudget:
    """Retries shared by every request of one client.

    Each retry spends one token; each success earns ``ratio`` tokens, up to ``reserve``.
    """

    __slots__ = ("_ratio", "_reserve", "_tokens")

    def __init__(self, *, ratio: float, reserve: float) -> None:
        self._ratio = ratio
        self._reserve = reserve
        self._tokens = reserve

    @property
    def tokens(self) -> float:
        """Retries available now."""
        return self._tokens

    def record_success(self) -> None:
        """Earn a fraction of a retry."""
        self._tokens = min(self._reserve, self._tokens + self._ratio)

    def try_spend(self) -> bool:
        """Spend one retry if there is one."""
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class TokenBucket:
    """A rate limit as a sans-IO reservation: `reserve` says how long to wait.

    ``rate`` events per second with bursts of up to ``burst`` (default: one second's worth).
    """

    __slots__ = ("_interval", "_tat", "_tolerance")

    def __init__(self, rate: float, *, burst: float | None = None) -> None:
        self._interval = 1.0 / rate
        burst = max(1.0, rate if burst is None else burst)
        self._tolerance = (burst - 1.0) * self._interval
        self._tat = -math.inf  # theoretical arrival time of the next conforming event

    def reserve(self, now: float) -> float:
        """Take one slot and return the seconds to wait before using it (0 when free)."""
        tat = max(self._tat, now)
        delay = max(0.0, tat - self._tolerance - now)
        self._tat = tat + self._interval
        return delay


class CreateAction(enum.Enum):
    """What to do after a create failed."""

    RETRY = "retry"
    """Send it again after ``wait`` (it provably did no work)."""
    AWAIT_CALLBACK = "await_callback"
    """It may have created a job: wait for that job to call home before giving up."""
    UNKNOWN = "unknown"
    """It may have created a job and nothing can tell: end it ``unknown``, never resend."""
    FAILED = "failed"
    """The provider refused it and no job exists: end it ``failed``."""


class CreateDecision(NamedTuple):
    """`decide_create_failure`'s answer; ``pause`` holds every create (after a 429)."""

    action: CreateAction
    wait: float | None = None
    pause: float | None = None


def decide_create_failure(
    error: RequestError,
    *,
    attempt: int,
    policy: RetryPolicy,
    table: Sequence[float],
    rng: random.Random | None,
    budget: RetryBudget,
    callbacks: bool,
) -> CreateDecision:
    """Decide what follows a failed create (no I/O; it may spend one token of ``budget``).

    ``attempt`` counts the tries made so far; ``callbacks`` says whether a job created by
    an ambiguous request could still call home.
    """
    wait = retry_wait(error, attempt=attempt, policy=policy, table=table, rng=rng)
    # One 429 slows every create of this provider, not just this job.
    pause = None
    if isinstance(error, RateLimitedError):
        pause = wait if wait is not None else table[0]
    # A retry the provider scheduled itself (Retry-After, with the whole create lane paused)
    # is already paced; the budget guards the unpaced ones.
    paced = getattr(error, "retry_after", None) is not None
    if wait is not None and (paced or budget.try_spend()):
        return CreateDecision(CreateAction.RETRY, wait, pause)
    if error.phase is Phase.AMBIGUOUS:
        action = CreateAction.AWAIT_CALLBACK if callbacks else CreateAction.UNKNOWN
        return CreateDecision(action, None, pause)
    return CreateDecision(CreateAction.FAILED, None, pause)
