"""Limits discovered by probing: additive increase while the provider answers,
multiplicative decrease when it refuses (DESIGN.md "Polling that learns").

- `AIMDLimit`: the value (jobs in flight, connections, requests per second) and its rules;
- `AdaptiveRate`: a pacing rate limit whose rate an `AIMDLimit` discovers;
- `AdjustableSlots`: an `asyncio.Semaphore` whose capacity follows an `AIMDLimit`.

`AIMDLimit` and `AdaptiveRate` are sans-IO: every call takes ``now`` from the caller's clock.
"""

from __future__ import annotations

import asyncio
import math

__all__ = ["AIMDLimit", "AdaptiveRate", "AdjustableSlots"]


class AIMDLimit:
    """A limit found by probing: additive increase while the provider answers, halving-ish on 429.

    Args:
        initial: the starting value (e.g. jobs in flight, or requests per second).
        floor: never below this (at least 1 makes sense for slots).
        ceiling: never above this (the user's cap); ``None``: unbounded.
        increase: added per ``value`` successes (so per round trip of a full window, as in
            TCP congestion avoidance); before the first throttle, per success (slow start:
            the value doubles per window until the provider first says no).
        decrease: the factor applied on a throttle. 0.9 keeps a rate limit's sawtooth
            between 90 % and 100 % of the provider's limit; 0.5 would average 75 %.
        cooldown: seconds during which further throttles change nothing, so one burst of
            429s (all sent before the provider's first "no" arrived) decreases once: at
            most one decrease per congestion epoch, as TCP decreases once per window.
        recovery: below ``peak`` (the value before the last decrease), the increase per
            window is at least this share of the way back to it, so a decrease the
            provider did not need (a stray throttle) is made up within a few windows,
            while growth beyond the peak stays additive (a cautious probe).
        blind: the initial value is a guess made while the provider accepted nothing (a
            storm of refusals). Throttles before the first success then leave slow start
            on, so once requests are accepted again the value doubles per window until
            the next throttle instead of creeping up from the guess by ``increase``; the
            first throttle after a success ends slow start as usual.
        probe: seconds; without a decrease for that long (while the value binds), the
            increase doubles, for twice as long triples, and so on (``None``: constant).
        slow_start: ``False``: the initial value is already a measurement of the provider's
            limit (what it accepted while refusing the rest), so growth is additive from
            the start.
        doubling: seconds; slow start at most doubles the value within this time (0: no
            bound, it doubles per window of successes however fast they come). Slow start
            is clocked by answers: against a fast provider they come back within
            milliseconds and the value would grow tenfold before any refusal can answer.

    Sans-IO: every call takes ``now`` from the caller's clock.
    """

    __slots__ = (
        "_blind",
        "_cooldown_until",
        "_doubled_from",
        "_doubling_until",
        "_slow_start",
        "ceiling",
        "cooldown",
        "decrease",
        "doubling",
        "floor",
        "increase",
        "peak",
        "probe",
        "recovery",
        "throttles",
        "value",
    )

    def __init__(
        self,
        initial: float,
        *,
        floor: float = 1.0,
        ceiling: float | None = None,
        increase: float = 1.0,
        decrease: float = 0.9,
        cooldown: float = 1.0,
        recovery: float = 0.5,
        probe: float | None = None,
        blind: bool = False,
        slow_start: bool = True,
        doubling: float = 0.0,
    ) -> None:
        if not floor > 0 or (ceiling is not None and ceiling < floor):
            raise ValueError(f"need 0 < floor <= ceiling, got {floor!r}, {ceiling!r}")
        if not 0.0 < decrease < 1.0:
            raise ValueError(f"decrease must be in (0, 1), got {decrease!r}")
        self.floor = floor
        self.ceiling = ceiling
        self.increase = increase
        self.decrease = decrease
        self.cooldown = cooldown
        self.recovery = recovery
        self.probe = probe
        self.value = self._clamp(initial)
        self.peak = self.value
        """The value before the last decrease (recovery aims back at it)."""
        self.throttles = 0
        """Throttles that decreased the value."""
        self._cooldown_until = -math.inf
        self._slow_start = slow_start
        self._blind = blind  # no success counted yet, and throttles keep slow start
        self.doubling = doubling
        self._doubling_until = -math.inf  # the end of the current doubling period
        self._doubled_from = self.value  # the value at its start

    def _clamp(self, value: float) -> float:
        if self.ceiling is not None and value > self.ceiling:
            value = self.ceiling
        return value if value > self.floor else self.floor

    def on_success(self, now: float) -> None:
        """Count one request the provider accepted; grow the value a little."""
        self._blind = False
        if now < self._cooldown_until:
            return  # answers to requests sent before the decrease say nothing new
        value = self.value
        if self._slow_start:
            step = self.increase
            if self.doubling:
                if now >= self._doubling_until:
                    self._doubling_until = now + self.doubling
                    self._doubled_from = value
                if value + step > 2.0 * self._doubled_from:
                    return  # doubled already in this period
        else:
            step = self.increase
            if self.probe is not None and now > self._cooldown_until:
                # Calm since the last decrease: probe further by growing faster (a value
                # started or lowered too far comes back within tens of seconds).
                step *= 1.0 + (now - self._cooldown_until) / self.probe
            gap = self.peak - value
            if gap > 0.0 and self.recovery * gap > step:
                step = self.recovery * gap
            step /= value
        self.value = self._clamp(value + step)

    def on_throttle(
        self, now: float, sent_at: float | None = None, accepted: float | None = None
    ) -> bool:
        """Count one 429/503; decrease unless cooling down. Return whether it decreased.

        ``accepted``: what the provider accepted lately (same unit as the value); the
        decrease then starts from it when it is lower than the value (a limit that was not
        reached, e.g. a rate the demand never filled, says nothing about the provider's).

        ``sent_at``: when the throttled request was sent; a request sent before the last
        decrease took effect is part of the burst already answered for.
        """
        if now < self._cooldown_until or (
            sent_at is not None and sent_at < self._cooldown_until - self.cooldown
        ):
            return False
        if not self._blind:
            self._slow_start = False
        self.peak = self.value
        base = self.value if accepted is None or accepted >= self.value else accepted
        self.value = self._clamp(base * self.decrease)
        self._cooldown_until = now + self.cooldown
        self.throttles += 1
        return True

    def cool_down(self, now: float) -> None:
        """Start a cool-down as a decrease does (the value was just set from a throttle)."""
        self._cooldown_until = now + self.cooldown

    def undo(self, before: float) -> None:
        """Take back a decrease that did not help (the throttles went on just the same)."""
        self.value = self._clamp(max(self.value, before))
        self.peak = max(self.peak, self.value)


class AdaptiveRate:
    """A pacing rate limit (creates or polls per second) whose rate an `AIMDLimit` discovers.

    Drop-in for `TokenBucket`'s ``reserve(now) -> delay``; call `on_success` /
    `on_throttle` with each answer. A throttle with ``retry_after`` also pauses every
    request until then (the shared 429 pause). The rate grows only while it is what holds
    requests back, so an idle lane does not build up a rate it never tested.

    Requests wait in line by ticket (`take`, then `wait`): a counter of requests let go runs
    at the rate of the moment (not during a pause), and a ticket's wait is read from it
    when asked, so a rate that changes moves every request already waiting, not only the
    ones that come after (a queue of creates reserved at a low rate does not keep its slow
    schedule once the rate has recovered).

    Args:
        limit: the rate, e.g. ``AIMDLimit(20.0, ceiling=user_cap)``.
        burst: requests allowed at once above the steady pace (1: strictly paced).
        grain: seconds; turns are rounded to the nearest point of a grid this fine, so
            requests due within it go together (fewer wake-ups; 0: every turn its own).
    """

    __slots__ = (
        "_at",
        "_busy_until",
        "_issued",
        "_paused_until",
        "_released",
        "burst",
        "grain",
        "limit",
    )

    def __init__(self, limit: AIMDLimit, *, burst: float = 1.0, grain: float = 0.0) -> None:
        self.limit = limit
        self.burst = max(1.0, burst)
        self.grain = grain
        self._issued = 0.0  # tickets handed out
        self._released = 0.0  # requests the rate let go by `_at` (never beyond `_issued`)
        self._at = -math.inf
        self._paused_until = -math.inf
        self._busy_until = -math.inf

    @property
    def rate(self) -> float:
        """Requests per second allowed now."""
        return self.limit.value

    @property
    def paused_until(self) -> float:
        """The end of the current Retry-After pause (``-inf``: none)."""
        return self._paused_until

    def _advance(self, now: float) -> None:
        """Let go the requests the rate allowed since the last call (none while paused)."""
        at = self._at
        if now <= at:
            return
        start = at if at > self._paused_until else self._paused_until
        if now > start:
            released = self._released + (now - start) * self.limit.value
            # No credit beyond the last ticket: an idle rate allows `burst`, not more.
            self._released = released if released < self._issued else self._issued
        self._at = now

    def take(self, now: float) -> float:
        """Take a place in line; return its ticket (for `wait`)."""
        self._advance(now)
        self._issued += 1.0
        return self._issued

    def wait(self, ticket: float, now: float) -> float:
        """Return the seconds ``ticket`` still has to wait at the current rate (0: go)."""
        self._advance(now)
        ahead = ticket - self.burst - self._released
        start = self._paused_until if self._paused_until > now else now
        delay = start - now
        if ahead > 0.0:
            rate = self.limit.value
            delay += ahead / rate
            # The rate holds requests back until the line is through (and one more).
            busy = start + (self._issued - self._released + 1.0) / rate
            if busy > self._busy_until:
                self._busy_until = busy
            grain = self.grain
            if grain and delay > 0.0:
                # Turns on a shared grid: the requests due around one of its points go
                # together, one wake-up for several (the average rate is the same).
                delay = math.floor((now + delay) / grain + 0.5) * grain - now
        return delay if delay > 1e-9 else 0.0  # not a rounding error's worth

    def reserve(self, now: float) -> float:
        """Take one slot and return the seconds to wait before sending (0 when free).

        `take` then `wait`, in one call (the poll scheduler's path, once per poll)."""
        if now > self._at:
            self._advance(now)
        issued = self._issued = self._issued + 1.0
        ahead = issued - self.burst - self._released
        if ahead <= 0.0 and now >= self._paused_until:
            return 0.0
        return self.wait(issued, now)

    def on_success(self, now: float) -> None:
        """Count one accepted request; the rate grows if it was the bottleneck."""
        if now <= self._busy_until:
            self._advance(now)
            self.limit.on_success(now)

    def on_throttle(
        self,
        now: float,
        retry_after: float | None = None,
        sent_at: float | None = None,
        accepted: float | None = None,
    ) -> None:
        """Count one 429/503: slow down (from ``accepted`` requests per second when that is
        lower than the rate), and pause everything for ``retry_after`` seconds."""
        self._advance(now)
        self.limit.on_throttle(now, sent_at, accepted)
        self.pause(now, retry_after)

    def pause(self, now: float, retry_after: float | None) -> None:
        """Hold every request for ``retry_after`` seconds (the rate itself unchanged)."""
        if retry_after is not None and retry_after > 0.0:
            self._advance(now)
            self._paused_until = max(self._paused_until, now + retry_after)


class AdjustableSlots:
    """An `asyncio.Semaphore` whose capacity follows an `AIMDLimit`.

    Growing releases extra permits; shrinking withholds permits as they are given back
    (``_debt``), so nothing in flight is interrupted. The capacity grows only while every
    slot is taken (the limit is what holds requests back), so an idle client does not build
    up a capacity it never tested. ``acquire`` is the semaphore's own method: the hot path
    pays nothing for the adjustability but one check in `release`.
    """

    __slots__ = ("_debt", "_semaphore", "acquire", "capacity", "limit")

    def __init__(self, limit: AIMDLimit) -> None:
        self.limit = limit
        self.capacity = int(limit.value)
        self._semaphore = asyncio.Semaphore(self.capacity)
        self._debt = 0
        self.acquire = self._semaphore.acquire

    def locked(self) -> bool:
        """Whether every slot is taken (`asyncio.Semaphore.locked` without its scan of the
        waiters: this is asked after every request)."""
        return self._semaphore._value <= 0

    def release(self) -> None:
        """Give one slot back (kept back instead while the capacity is being lowered)."""
        if self._debt:
            self._debt -= 1
        else:
            self._semaphore.release()

    async def __aenter__(self) -> None:
        await self._semaphore.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def on_success(self, now: float) -> bool:
        """Count an answered request; grow if every slot was taken. Return whether it grew."""
        if self._semaphore._value > 0:
            return False  # not every slot taken: the capacity is not what binds
        self.limit.on_success(now)
        return self._follow()

    def on_throttle(self, now: float, sent_at: float | None = None) -> bool:
        """Count a 429/503; shrink unless cooling down. Return whether it shrank."""
        return self.limit.on_throttle(now, sent_at) and self._follow()

    def _follow(self) -> bool:
        target = int(self.limit.value)
        change = target - self.capacity
        if change == 0:
            return False
        self.capacity = target
        if change > 0:
            paid = min(change, self._debt)
            self._debt -= paid
            for _ in range(change - paid):
                self._semaphore.release()
        else:
            self._debt -= change
        return True
