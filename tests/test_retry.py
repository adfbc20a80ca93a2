"""Table tests of the sans-IO retry decisions: resend safety, Retry-After, backoff, budgets,
the create-failure decision. (Which phase an aiohttp error means: test_transport.py.)"""

from __future__ import annotations

import random

import pytest

from flux_async import (
    BadRequestError,
    Phase,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    RetryPolicy,
    TransportError,
)
from flux_async._errors import RequestError
from flux_async._retry import (
    CreateAction,
    CreateDecision,
    RetryBudget,
    TokenBucket,
    decide_create_failure,
    is_resend_safe,
    jittered,
    retry_wait,
    wait_table,
)


@pytest.mark.parametrize(
    ("operation", "phase", "safe"),
    [
        ("create", Phase.NOT_SENT, True),
        ("create", Phase.REFUSED, True),
        ("create", Phase.DEFINITIVE, False),
        ("create", Phase.AMBIGUOUS, False),  # could pay twice
        ("query", Phase.NOT_SENT, True),
        ("query", Phase.REFUSED, True),
        ("query", Phase.AMBIGUOUS, True),
        ("query", Phase.DEFINITIVE, False),
    ],
)
def test_resend_safety(operation: str, phase: Phase, safe: bool) -> None:
    assert is_resend_safe(operation, phase) is safe


def _error(
    cls: type[ProviderError] | type[TransportError], operation: str, phase: Phase, **kw: object
) -> ProviderError | TransportError:
    return cls("x", provider="p", phase=phase, operation=operation, **kw)  # type: ignore[arg-type]


def test_retry_wait_honours_retry_after_up_to_a_cap() -> None:
    policy = RetryPolicy(attempts=5, retry_after_max=10)
    table = wait_table(0.25, 2, 20)
    ok = _error(RateLimitedError, "create", Phase.REFUSED, retry_after=7.0)
    too_long = _error(RateLimitedError, "create", Phase.REFUSED, retry_after=11.0)
    assert retry_wait(ok, attempt=1, policy=policy, table=table, rng=None) == 7.0
    assert retry_wait(too_long, attempt=1, policy=policy, table=table, rng=None) is None


def test_retry_wait_never_resends_an_ambiguous_create() -> None:
    policy = RetryPolicy()
    table = wait_table(0.25, 2, 20)
    ambiguous = _error(TransportError, "create", Phase.AMBIGUOUS)
    assert retry_wait(ambiguous, attempt=1, policy=policy, table=table, rng=None) is None
    same_for_query = _error(TransportError, "query", Phase.AMBIGUOUS)
    assert retry_wait(same_for_query, attempt=1, policy=policy, table=table, rng=None) == 0.25


def test_retry_wait_stops_after_attempts() -> None:
    policy = RetryPolicy(attempts=3)
    table = wait_table(0.25, 2, 20)
    refused = _error(ProviderError, "create", Phase.REFUSED)
    assert retry_wait(refused, attempt=2, policy=policy, table=table, rng=None) == 0.5
    assert retry_wait(refused, attempt=3, policy=policy, table=table, rng=None) is None


def test_wait_table_is_backoff_expo_capped() -> None:
    assert wait_table(0.5, 2, 3, size=5) == (0.5, 1.0, 2.0, 3, 3)


def test_full_jitter_stays_within_the_step() -> None:
    table = wait_table(1, 2, 8)
    rng = random.Random(1)
    draws = [jittered(table, 3, rng) for _ in range(500)]
    assert all(0 <= d <= 8 for d in draws)
    assert min(draws) < 1 and max(draws) > 7  # spread over the whole range
    assert jittered(table, 99, None) == 8


def test_retry_budget_is_shared_and_refills_on_success() -> None:
    budget = RetryBudget(ratio=0.5, reserve=2)
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()
    budget.record_success()
    assert not budget.try_spend()
    budget.record_success()
    assert budget.try_spend()
    for _ in range(100):
        budget.record_success()
    assert budget.tokens == 2


def test_token_bucket_bounds_the_rate() -> None:
    bucket = TokenBucket(10, burst=2)
    delays = [bucket.reserve(0.0) for _ in range(6)]
    assert delays == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3, 0.4])
    # after a quiet second the burst is available again
    assert bucket.reserve(10.0) == 0.0


_TABLE = (0.25, 0.5, 1.0)
R, A, U, F = (
    CreateAction.RETRY,
    CreateAction.AWAIT_CALLBACK,
    CreateAction.UNKNOWN,
    CreateAction.FAILED,
)


@pytest.mark.parametrize(
    ("error", "attempt", "budget", "callbacks", "expected"),
    [
        # connect failure: nothing was sent, resent after the backoff step
        (_error(TransportError, "create", Phase.NOT_SENT), 1, 5.0, False, (R, 0.25, None)),
        # ... but not beyond the shared retry budget, nor beyond the attempts
        (_error(TransportError, "create", Phase.NOT_SENT), 1, 0.0, False, (F, None, None)),
        (_error(TransportError, "create", Phase.NOT_SENT), 6, 5.0, False, (F, None, None)),
        # a read timeout after sending: never resent; the job may exist
        (_error(TransportError, "create", Phase.AMBIGUOUS), 1, 5.0, False, (U, None, None)),
        (_error(TransportError, "create", Phase.AMBIGUOUS), 1, 5.0, True, (A, None, None)),
        (
            _error(ProviderUnavailableError, "create", Phase.AMBIGUOUS, status=502),
            1,
            5.0,
            True,
            (A, None, None),
        ),
        # a definitive no: the provider refused, no job exists
        (
            _error(BadRequestError, "create", Phase.DEFINITIVE, status=400),
            1,
            5.0,
            True,
            (F, None, None),
        ),
        # 429 with Retry-After: paced by the provider, so retried even with no budget, and
        # every create pauses for as long
        (
            _error(RateLimitedError, "create", Phase.REFUSED, status=429, retry_after=3.0),
            1,
            0.0,
            False,
            (R, 3.0, 3.0),
        ),
        # 429 without Retry-After: the first backoff step, from the budget
        (
            _error(RateLimitedError, "create", Phase.REFUSED, status=429),
            2,
            5.0,
            False,
            (R, 0.5, 0.5),
        ),
        # 429 asking for longer than retry_after_max: given up, creates still paused
        (
            _error(RateLimitedError, "create", Phase.REFUSED, status=429, retry_after=600.0),
            1,
            5.0,
            False,
            (F, None, 0.25),
        ),
        # 503: refused, retried
        (
            _error(ProviderUnavailableError, "create", Phase.REFUSED, status=503),
            1,
            5.0,
            False,
            (R, 0.25, None),
        ),
    ],
)
def test_decide_create_failure(
    error: RequestError,
    attempt: int,
    budget: float,
    callbacks: bool,
    expected: tuple[CreateAction, float | None, float | None],
) -> None:
    tokens = RetryBudget(ratio=0.2, reserve=budget)
    decision = decide_create_failure(
        error,
        attempt=attempt,
        policy=RetryPolicy(attempts=6),
        table=_TABLE,
        rng=None,
        budget=tokens,
        callbacks=callbacks,
    )
    assert decision == CreateDecision(*expected)
    # A retry the provider did not pace spends one token of the shared budget.
    paced = getattr(error, "retry_after", None) is not None
    spent = decision.action is CreateAction.RETRY and not paced
    assert tokens.tokens == budget - (1.0 if spent else 0.0)
