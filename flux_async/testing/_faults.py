"""Describe the fault schedule and draw per-request fault decisions from a seeded RNG."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, fields
from typing import Literal

from ._latency import LatencyLike, as_latency

__all__ = [
    "PROMPT_TRIGGERS",
    "CallbackFault",
    "FaultDice",
    "Faults",
    "JobFate",
    "Outcome",
    "prompt_triggers",
]

Outcome = Literal["succeeded", "failed", "never", "unknown_status", "cancelled"]
CallbackFault = Literal["duplicate", "early", "late", "out_of_order", "never"]

#: Every ``[fault:<name>]`` marker a prompt may carry; see the package docstring.
PROMPT_TRIGGERS = frozenset(
    {
        "never-finish",
        "fail",
        "unknown-status",
        "drop",
        "429",
        "5xx",
        "reset",
        "no-callback",
        "dup-callback",
        "early-callback",
        "late-callback",
        "out-of-order-callback",
    }
)

_TRIGGER_RE = re.compile(r"\[fault:([a-z0-9-]+)\]")


def prompt_triggers(prompt: str | None) -> frozenset[str]:
    """Return the known ``[fault:...]`` markers found in a prompt."""
    if not prompt or "[fault:" not in prompt:
        return frozenset()
    return frozenset(m for m in _TRIGGER_RE.findall(prompt) if m in PROMPT_TRIGGERS)


@dataclass(frozen=True)
class Faults:
    """A seeded fault schedule for `FakeProvider`; every field defaults to "no fault".

    Probabilities are in [0, 1] and are drawn from the fake's seeded RNG, once per
    request (create or query) or once per created job, as each field says.

    Attributes:
        create_429: Refuse a create with HTTP 429 and ``Retry-After`` (no job created).
        retry_after: Seconds sent in ``Retry-After``, rounded up to an integer.
        create_5xx: Refuse a create with 500 or 503 before creating the job.
        query_5xx: Answer a query with 500 or 503.
        create_reset: Reset a create's connection before anything is created.
        query_reset: Reset a query's connection.
        drop_after_accept: Create the job, then close the connection without answering.
        never_finish: The job stays running forever.
        fail: The job ends failed.
        unknown_status: Once ready, the job reports an undocumented status value.
        rate_limit_first_creates: Answer the first N create requests (all providers
            together) with 429, deterministically.
        callback_duplicate: Deliver the terminal callback twice.
        callback_early: Deliver the terminal callback before the create response.
        callback_late: Deliver the callback ``callback_late_delay`` seconds late.
        callback_late_delay: Extra delay, in seconds, for late callbacks.
        callback_out_of_order: Deliver the terminal callback, then a stale running one.
        callback_never: Never deliver the callback.
        create_delay: Hold every create's answer this long after its job was made:
            seconds, a ``(low, high)`` range or a `Latency`. The job exists (and its
            latency runs) from the request's arrival, so many creates can be "in
            flight" for the client while the provider already made their jobs.
        rate_limit: A hidden limit in requests per second per API key, over every
            keyed route (creates, queries, PiAPI cancel and history; not image
            downloads): a token bucket refilled at this rate. A request beyond it gets
            429 with ``Retry-After`` (the whole seconds until a token is free, at least
            1) and no job. 0 turns it off.
        rate_limit_burst: The bucket's size, in requests; None means ``rate_limit``
            (one second's worth), at least 1.
    """

    create_429: float = 0.0
    retry_after: float = 1.0
    create_5xx: float = 0.0
    query_5xx: float = 0.0
    create_reset: float = 0.0
    query_reset: float = 0.0
    drop_after_accept: float = 0.0
    never_finish: float = 0.0
    fail: float = 0.0
    unknown_status: float = 0.0
    rate_limit_first_creates: int = 0
    callback_duplicate: float = 0.0
    callback_early: float = 0.0
    callback_late: float = 0.0
    callback_late_delay: float = 0.5
    callback_out_of_order: float = 0.0
    callback_never: float = 0.0
    create_delay: LatencyLike = 0.0
    rate_limit: float = 0.0
    rate_limit_burst: float | None = None

    def __post_init__(self) -> None:
        """Reject probabilities outside [0, 1] and negative counts, rates or delays."""
        not_probabilities = {
            "retry_after",
            "rate_limit_first_creates",
            "callback_late_delay",
            "rate_limit",
        }
        as_latency(self.create_delay)  # raises on a malformed delay
        if self.rate_limit_burst is not None and not self.rate_limit_burst >= 1:
            raise ValueError(f"Faults.rate_limit_burst must be >= 1, got {self.rate_limit_burst!r}")
        for field in fields(self):
            if field.name in ("create_delay", "rate_limit_burst"):
                continue
            value = getattr(self, field.name)
            if field.name in not_probabilities:
                if value < 0:
                    raise ValueError(f"Faults.{field.name} must be >= 0, got {value!r}")
            elif not 0.0 <= value <= 1.0:
                raise ValueError(f"Faults.{field.name} must be in [0, 1], got {value!r}")

    @property
    def retry_after_header(self) -> str:
        """Return ``retry_after`` as the integer string sent in ``Retry-After``."""
        return str(max(0, math.ceil(self.retry_after)))


@dataclass(frozen=True, slots=True)
class JobFate:
    """What happens to one accepted job."""

    outcome: Outcome
    drop_response: bool
    callback_faults: frozenset[CallbackFault]


class FaultDice:
    """Draw fault decisions in a fixed order from one seeded RNG.

    A probability of zero consumes no random number, so turning one fault on does not
    reshuffle the draws of a schedule that leaves it off.
    """

    def __init__(self, faults: Faults, rng: random.Random) -> None:
        self.faults = faults
        self._rng = rng
        self._prompts_rate_limited: set[str] = set()
        delay = as_latency(faults.create_delay)
        # A zero delay draws nothing, so it leaves a schedule's other draws alone.
        self._create_delay = None if delay.kind == "fixed" and delay.a == 0 else delay

    def create_delay(self, job_index: int) -> float:
        """Draw how long a create's answer is held after its job was made."""
        if self._create_delay is None:
            return 0.0
        return self._create_delay.draw(self._rng, job_index)

    def chance(self, probability: float) -> bool:
        """Return True with the given probability."""
        return probability > 0.0 and self._rng.random() < probability

    def create_reset(self, triggers: frozenset[str]) -> bool:
        """Decide whether a create's connection is reset."""
        return "reset" in triggers or self.chance(self.faults.create_reset)

    def create_refusal(self, triggers: frozenset[str], attempt: int, prompt: str) -> int | None:
        """Return the HTTP status refusing a create (429, 500 or 503), or None to go on.

        Args:
            triggers: The prompt's fault markers.
            attempt: The 1-based number of this create among all create requests.
            prompt: The prompt, remembered for the once-per-prompt ``[fault:429]``.
        """
        if attempt <= self.faults.rate_limit_first_creates:
            return 429
        if "429" in triggers and prompt not in self._prompts_rate_limited:
            self._prompts_rate_limited.add(prompt)
            return 429
        if self.chance(self.faults.create_429):
            return 429
        if "5xx" in triggers:
            return 503
        if self.chance(self.faults.create_5xx):
            return self._rng.choice((500, 503))
        return None

    def query_fault(self) -> Literal["reset", 500, 503] | None:
        """Decide whether a query is reset or answered 5xx."""
        if self.chance(self.faults.query_reset):
            return "reset"
        if self.chance(self.faults.query_5xx):
            return 500 if self._rng.random() < 0.5 else 503
        return None

    def job_fate(self, triggers: frozenset[str], *, has_callback: bool) -> JobFate:
        """Decide the outcome, response loss and callback faults of an accepted job."""
        faults = self.faults
        outcome: Outcome = "succeeded"
        if "never-finish" in triggers or self.chance(faults.never_finish):
            outcome = "never"
        elif "fail" in triggers or self.chance(faults.fail):
            outcome = "failed"
        elif "unknown-status" in triggers or self.chance(faults.unknown_status):
            outcome = "unknown_status"
        drop = "drop" in triggers or self.chance(faults.drop_after_accept)
        callback_faults: set[CallbackFault] = set()
        if has_callback:
            if "no-callback" in triggers or self.chance(faults.callback_never):
                callback_faults.add("never")
            if "dup-callback" in triggers or self.chance(faults.callback_duplicate):
                callback_faults.add("duplicate")
            if "early-callback" in triggers or self.chance(faults.callback_early):
                callback_faults.add("early")
            if "late-callback" in triggers or self.chance(faults.callback_late):
                callback_faults.add("late")
            if "out-of-order-callback" in triggers or self.chance(faults.callback_out_of_order):
                callback_faults.add("out_of_order")
        return JobFate(outcome, drop, frozenset(callback_faults))
