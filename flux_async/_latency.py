"""What the client learns about a provider: how long its jobs take, and how hard it may push.

Sans-IO and allocation-free on the hot path: nothing here sleeps, reads a clock or touches a
socket. Callers pass ``now`` (any monotonic clock) and a `random.Random`.

- `LatencyEstimate`: a decaying log-spaced histogram of create-to-ready times, with the
  provider's typical latency as a prior, saved and loaded as a few hundred bytes.
- `PollPlanner`: when to poll a job of a given age, from an estimate.
- `AIMDLimit` / `AdaptiveRate`: limits discovered by additive increase and multiplicative
  decrease (jobs in flight, creates or polls per second).
- `simulate_polling`: an offline, deterministic replay of a plan over a list of latencies.

Censored observations. A poll only tells that a job became ready after the last poll that
found it running and no later than the one that found it ready. `observe_interval` spreads
that one sample over the interval in proportion to the current estimate (one step of the
self-consistent, Turnbull/EM estimator), which is unbiased when the estimate is right, unlike
the midpoint, which pulls every sample of the first check towards half its time and so keeps
moving the first check earlier. When the estimate has no mass in the interval (the provider
changed) the sample goes to the interval's (geometric) midpoint. A small share of jobs get an
earlier "probe" first check, so a provider that sped up is noticed even though the normal
first check finds everything already done.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "AIMDLimit",
    "AdaptiveRate",
    "LatencyEstimate",
    "PollPlanner",
    "SimulationResult",
    "simulate_polling",
]

BUCKETS = 64
LOW = 0.05  # seconds; faster jobs count as 50 ms
HIGH = 1800.0  # seconds; slower jobs count as 30 min
_LOG_LOW = math.log(LOW)
_LOG_STEP = (math.log(HIGH) - _LOG_LOW) / BUCKETS  # each bucket is ~18 % wider than the last
_EDGES = tuple(math.exp(_LOG_LOW + i * _LOG_STEP) for i in range(BUCKETS + 1))
_RESCALE_AT = 1e100  # growing sample weights are folded back before they overflow

_MAGIC = b"FLXL"
_VERSION = 1
_HEADER = struct.Struct("<4sBBxxddd")  # magic, version, buckets, half_life, total, samples
_BODY = struct.Struct(f"<{BUCKETS}f")


def _position(seconds: float) -> float:
    """Return the fractional bucket position of ``seconds`` (clamped to the histogram)."""
    if seconds <= LOW:
        return 0.0
    pos = (math.log(seconds) - _LOG_LOW) / _LOG_STEP
    return pos if pos < BUCKETS else BUCKETS - 1e-9


class LatencyEstimate:
    """A streaming estimate of one provider/model's create-to-ready time.

    64 log-spaced buckets from 50 ms to 30 min (about 18 % resolution); each new sample
    weighs ``2 ** (1 / half_life)`` times the one before, so the estimate follows a provider
    that slows down or speeds up within a few ``half_life`` samples; memory is fixed.

    Args:
        typical: the provider's typical latency in seconds: the prior, ``prior_weight``
            pseudo-samples spread log-normally around it (``prior_spread`` in log units),
            which decay like real ones. ``None``: no prior (the estimate starts empty).
        half_life: samples after which an observation counts half.
    """

    __slots__ = (
        "_counts",
        "_decay",
        "_gain",
        "_half_life",
        "_prior",
        "_samples",
        "_total",
        "version",
    )

    def __init__(
        self,
        typical: float | None = None,
        *,
        half_life: float = 200.0,
        prior_weight: float = 4.0,
        prior_spread: float = 0.75,
    ) -> None:
        if not (half_life > 0 and math.isfinite(half_life)):
            raise ValueError(f"half_life must be a finite number > 0, got {half_life!r}")
        self._half_life = float(half_life)
        self._decay: float = 2.0 ** (-1.0 / half_life)
        self._counts = [0.0] * BUCKETS
        self._gain: float = 1.0  # a stored count c means c / gain samples today
        self._total: float = 0.0
        self._samples: float = 0.0
        self._prior: list[float] | None = None  # the prior's share of `_counts`, while kept
        self.version = 0
        """Changes whenever the estimate does (planners cache on it)."""
        if typical is not None and prior_weight > 0:
            if not (typical > 0 and math.isfinite(typical)):
                raise ValueError(f"typical must be a finite number > 0, got {typical!r}")
            self._add_prior(typical, prior_weight, prior_spread)

    def _add_prior(self, typical: float, weight: float, spread: float) -> None:
        centre = math.log(typical)
        densities = []
        for i in range(BUCKETS):
            mid = _LOG_LOW + (i + 0.5) * _LOG_STEP
            densities.append(math.exp(-0.5 * ((mid - centre) / spread) ** 2))
        norm = sum(densities)
        if norm <= 0.0:  # the typical latency is far outside the histogram
            densities[round(_position(typical))] = norm = 1.0
        prior = [weight * density / norm for density in densities]
        for i, count in enumerate(prior):
            self._counts[i] += count
        self._total += weight
        self._prior = prior

    def _drop_prior_if_contradicted(self, low: float, high: float) -> None:
        """Forget the prior when a real job's latency, known to lie in ``[low, high]``, is
        where the prior puts almost no job (under 0.5 % below ``high`` or above ``low``).

        The prior is a guess (the provider's typical latency, whatever the model). A job
        far outside it proves the guess wrong, and four pseudo-samples of it would
        otherwise set the poll plan's median for the next several jobs: jobs of 50 ms would
        be checked as if they took seconds. Checked only while few real samples exist.
        """
        prior = self._prior
        assert prior is not None
        weight = math.fsum(prior)
        below_high = 0.0
        top = min(int(_position(high)) + 1, BUCKETS)
        for i in range(top):
            below_high += prior[i]
        above_low = 0.0
        for i in range(int(_position(low)) if low > LOW else 0, BUCKETS):
            above_low += prior[i]
        if below_high >= 0.005 * weight and above_low >= 0.005 * weight:
            if self._samples / self._gain >= 8.0:
                self._prior = None  # agreed with enough samples: stop checking
            return
        counts = self._counts
        for i in range(BUCKETS):
            counts[i] = max(0.0, counts[i] - prior[i])
        self._total = max(0.0, self._total - weight)
        self._prior = None
        self.version += 1

    # -- reading ------------------------------------------------------------------------

    @property
    def samples(self) -> float:
        """The effective number of real observations (decayed; the prior not included)."""
        return self._samples / self._gain

    @property
    def weight(self) -> float:
        """The effective number of observations, the prior's pseudo-samples included."""
        return self._total / self._gain

    @property
    def half_life(self) -> float:
        """Observations after which one counts half."""
        return self._half_life

    def quantile(self, q: float) -> float:
        """Return the time in seconds by which a fraction ``q`` of jobs are ready.

        Raises:
            ValueError: the estimate is empty (no prior, no observations).
        """
        total = self._total
        if total <= 0.0:
            raise ValueError("the latency estimate is empty")
        target = min(max(q, 0.0), 1.0) * total
        cumulative = 0.0
        counts = self._counts
        last = 0
        for i in range(BUCKETS):
            count = counts[i]
            if count <= 0.0:
                continue
            last = i
            if cumulative + count >= target:
                fraction = (target - cumulative) / count
                return math.exp(_LOG_LOW + (i + fraction) * _LOG_STEP)
            cumulative += count
        return _EDGES[last + 1]

    def cdf(self, seconds: float) -> float:
        """Return the estimated fraction of jobs ready within ``seconds`` (0 when empty)."""
        total = self._total
        if total <= 0.0 or seconds <= 0.0:
            return 0.0
        if seconds >= HIGH:
            return 1.0
        pos = _position(seconds) if seconds > LOW else 0.0
        whole = int(pos)
        counts = self._counts
        cumulative = 0.0
        for i in range(whole):
            cumulative += counts[i]
        cumulative += counts[whole] * (pos - whole)
        return min(1.0, cumulative / total)

    # -- learning -----------------------------------------------------------------------

    def _next_weight(self) -> float:
        """Age every stored sample by one step and return the stored weight of a new one."""
        gain = self._gain / self._decay
        if gain > _RESCALE_AT:
            counts = self._counts
            for i in range(BUCKETS):
                counts[i] /= gain
            self._prior = None  # long since outweighed
            self._total /= gain
            self._samples /= gain
            gain = 1.0
        self._gain = gain
        self._samples += gain
        self._total += gain
        self.version += 1
        return gain

    def observe(self, seconds: float) -> None:
        """Learn one exact create-to-ready time (a webhook, a synchronous answer)."""
        if not math.isfinite(seconds):
            return
        if self._prior is not None:
            self._drop_prior_if_contradicted(seconds, seconds)
        weight = self._next_weight()
        self._counts[int(_position(seconds))] += weight

    def observe_interval(self, not_ready_at: float, ready_at: float) -> None:
        """Learn a job found running at ``not_ready_at`` and ready at ``ready_at`` (seconds).

        ``not_ready_at`` is 0 when the first poll found the job ready. The sample is spread
        over the interval as the current estimate spreads its own mass there (see the
        module docstring); where that is empty, it goes to the interval's midpoint.
        """
        if not (math.isfinite(ready_at) and math.isfinite(not_ready_at)):
            return
        if ready_at <= not_ready_at:
            self.observe(ready_at)
            return
        if self._prior is not None:
            self._drop_prior_if_contradicted(not_ready_at, ready_at)
        start = _position(not_ready_at) if not_ready_at > LOW else 0.0
        end = _position(ready_at)
        first, last = int(start), int(end)
        counts = self._counts
        mass = 0.0
        for i in range(first, last + 1):
            overlap = min(end, i + 1.0) - max(start, float(i))
            if overlap > 0.0:
                mass += counts[i] * overlap
        weight = self._next_weight()
        if mass <= 1e-9 * self._total:
            if not_ready_at > LOW:
                middle = math.sqrt(not_ready_at * ready_at)
            else:
                middle = 0.5 * (not_ready_at + ready_at)
            counts[int(_position(middle))] += weight
            return
        scale = weight / mass
        for i in range(first, last + 1):
            overlap = min(end, i + 1.0) - max(start, float(i))
            if overlap > 0.0:
                counts[i] += counts[i] * overlap * scale

    # -- saving -------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Return the estimate as 288 bytes (versioned; `from_bytes` reads it back)."""
        gain = self._gain
        header = _HEADER.pack(
            _MAGIC, _VERSION, BUCKETS, self._half_life, self._total / gain, self._samples / gain
        )
        return header + _BODY.pack(*(count / gain for count in self._counts))

    @classmethod
    def from_bytes(cls, data: bytes) -> LatencyEstimate:
        """Rebuild an estimate saved by `to_bytes`.

        Raises:
            ValueError: ``data`` is not a saved estimate of this version.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError("a saved latency estimate must be bytes")
        data = bytes(data)
        if len(data) != _HEADER.size + _BODY.size:
            raise ValueError(f"a saved latency estimate has {_HEADER.size + _BODY.size} bytes")
        magic, version, buckets, half_life, total, samples = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION or buckets != BUCKETS:
            raise ValueError("not a saved latency estimate of this version")
        counts = _BODY.unpack_from(data, _HEADER.size)
        values = (half_life, total, samples, *counts)
        if not all(math.isfinite(value) and value >= 0.0 for value in values):
            raise ValueError("a saved latency estimate holds a negative or non-finite number")
        if half_life <= 0.0 or samples > total * (1 + 1e-6) + 1e-9:
            raise ValueError("a saved latency estimate is inconsistent")
        estimate = cls(None, half_life=half_life)
        estimate._counts = [float(count) for count in counts]
        estimate._total = math.fsum(estimate._counts)  # float32 rounding: trust the buckets
        estimate._samples = min(samples, estimate._total)
        return estimate

    def __repr__(self) -> str:
        if self._total <= 0.0:
            return "LatencyEstimate(empty)"
        return (
            f"LatencyEstimate(p10={self.quantile(0.1):.3g}s, p50={self.quantile(0.5):.3g}s, "
            f"p90={self.quantile(0.9):.3g}s, samples={self.samples:.1f})"
        )


class PollPlanner:
    """Decide when to poll a job next, from what a `LatencyEstimate` says about its age.

    The plan, for a lag target ``D = max(lag_floor, lag_ratio * median)`` (by default the
    larger of 100 ms and an eighth of the median latency):

    1. first check at ``quantile(early) + D``: only the ``early`` share of jobs that finish
       before ``quantile(early)`` wait longer than ``D`` to be noticed; no earlier check is
       worth a request, because almost no job is done yet;
    2. then every ``D`` while the job's age is below ``quantile(late)``, where the jobs are
       (``D`` grows if that would take more than ``max_body_polls`` checks), as long as at
       least a share ``worth`` of the jobs still running at that age end within ``D``;
       in a stretch where fewer end (between the two modes of a provider that changed
       speed), the next check goes where that share will have ended;
    3. past ``quantile(late)`` the job is slower than the estimate knows: the wait grows
       with its age (``tail_ratio * age``, i.e. exponentially), up to ``cap``.

    So for a correct estimate the p99 detection lag is about ``D`` when ``early + (1 - late)
    <= 1 %``. Each wait is at least ``min_gap`` and at most ``cap``, then shortened by up to
    ``jitter`` (a fraction): jobs created together drift apart, and no check comes later
    than planned, so the lag bound holds and the mean wait stays ``1 - jitter / 2`` of the
    plan (full jitter, ``U(0, wait)``, would halve it and double the requests). A share
    ``probe`` of jobs get their first check at 30-70 % of the planned time, which keeps a
    provider that sped up from hiding behind a first check that finds everything done.

    Ages are seconds since the create was sent. The estimate's quantiles are cached until it
    changes, so a call is O(1) between observations and O(buckets) after one; no call
    allocates.
    """

    __slots__ = (
        "_body_end",
        "_body_gaps",
        "_cumulative",
        "_first",
        "_gap",
        "_version",
        "cap",
        "early",
        "estimate",
        "jitter",
        "lag_floor",
        "lag_ratio",
        "late",
        "max_body_polls",
        "min_gap",
        "probe",
        "running_ratio",
        "tail_ratio",
        "worth",
    )

    def __init__(
        self,
        estimate: LatencyEstimate,
        *,
        cap: float = 15.0,
        min_gap: float = 0.05,
        lag_floor: float = 0.1,
        lag_ratio: float = 0.125,
        early: float = 0.008,
        late: float = 0.998,
        max_body_polls: int = 128,
        tail_ratio: float = 0.25,
        jitter: float = 0.1,
        probe: float = 0.05,
        worth: float = 0.02,
        running_ratio: float = 0.04,
    ) -> None:
        if not 0 < min_gap <= cap:
            raise ValueError(f"need 0 < min_gap <= cap, got {min_gap!r}, {cap!r}")
        if not 0.0 <= early < late <= 1.0:
            raise ValueError(f"need 0 <= early < late <= 1, got {early!r}, {late!r}")
        if not (0.0 <= jitter < 1.0 and 0.0 <= probe <= 1.0):
            raise ValueError("jitter must be in [0, 1) and probe in [0, 1]")
        self.estimate = estimate
        self.cap = cap
        self.min_gap = min_gap
        self.lag_floor = lag_floor
        self.lag_ratio = lag_ratio
        self.early = early
        self.late = late
        self.max_body_polls = max_body_polls
        self.tail_ratio = tail_ratio
        self.jitter = jitter
        self.probe = probe
        self.worth = worth
        self.running_ratio = running_ratio
        self._cumulative = [0.0] * (BUCKETS + 1)
        self._body_gaps = [0.0] * BUCKETS
        self._version = -1
        self._first = self._gap = self._body_end = 0.0

    def _refresh(self) -> None:
        estimate = self.estimate
        self._version = estimate.version
        if estimate.weight <= 0.0:  # nothing known: exponential growth from the start
            self._first = self._body_end = 0.0
            self._gap = max(self.min_gap, self.lag_floor)
            return
        cumulative = self._cumulative
        total = 0.0
        for i, count in enumerate(estimate._counts):
            cumulative[i] = total
            total += count
        cumulative[BUCKETS] = total
        start = estimate.quantile(self.early)
        end = estimate.quantile(self.late)
        gap = max(self.lag_floor, self.lag_ratio * estimate.quantile(0.5), self.min_gap)
        first = start + gap
        if end - first > gap * self.max_body_polls:
            gap = (end - first) / self.max_body_polls
        self._gap = gap = min(gap, self.cap)
        self._first = min(first, self.cap)
        self._body_end = end
        # The lag target of a job still running at an age: at least ``running_ratio`` of
        # the median latency of the jobs still running then. A provider that slowed down
        # is polled in proportion to its new latency while the old fast median still
        # dominates the estimate; for one mode it changes nothing below the median's D.
        # One pass: the running median's bucket only moves forward as the age grows.
        ratio = self.running_ratio
        gaps = self._body_gaps
        counts = estimate._counts
        j = 0
        for i in range(BUCKETS):
            if ratio <= 0.0:
                gaps[i] = gap
                continue
            target = 0.5 * (total + cumulative[i])
            while j < BUCKETS - 1 and cumulative[j + 1] < target:
                j += 1
            count = counts[j]
            fraction = (target - cumulative[j]) / count if count > 0.0 else 0.0
            running_median = math.exp(_LOG_LOW + (j + min(fraction, 1.0)) * _LOG_STEP)
            gaps[i] = min(self.cap, max(gap, ratio * running_median))

    @property
    def lag_target(self) -> float:
        """The detection lag the plan aims at (``D``), in seconds."""
        if self._version != self.estimate.version:
            self._refresh()
        return self._gap

    @property
    def first_check(self) -> float:
        """The planned age of the first check (before jitter and probes), in seconds."""
        if self._version != self.estimate.version:
            self._refresh()
        return self._first

    def _cdf(self, seconds: float) -> float:
        """The estimate's cdf in O(1), from the cumulative sums cached by `_refresh`."""
        pos = _position(seconds) if seconds > LOW else 0.0
        whole = int(pos)
        partial: float = self.estimate._counts[whole] * (pos - whole)
        return self._cumulative[whole] + partial

    def _worth_a_check(self, age: float, gap: float) -> bool:
        """Whether at least ``worth`` of the jobs still running at ``age`` end within ``gap``."""
        done = self._cdf(age)
        running = self._cumulative[BUCKETS] - done
        return self._cdf(age + gap) - done >= self.worth * running

    def _next_worth_it(self, age: float, gap: float) -> float:
        """Skip a stretch where almost no job ends: wait until ``worth`` of them could."""
        done = self._cdf(age)
        total = self._cumulative[BUCKETS]
        target = (done + self.worth * (total - done)) / total
        return max(gap, self.estimate.quantile(target) - age)

    def delay(self, age: float, polls_so_far: int, rng: random.Random | None) -> float:
        """Return the seconds to wait before polling a job that is ``age`` seconds old.

        ``polls_so_far`` counts the polls that found it running (0 before the first).
        ``rng=None``: no jitter and no probes (a deterministic plan).
        """
        if self._version != self.estimate.version:
            self._refresh()
        gap = self._gap
        first = self._first
        if polls_so_far == 0 and age < first:
            wait = first - age
            if rng is not None and rng.random() < self.probe:
                wait *= rng.uniform(0.3, 0.7)
        elif age < first * (1.0 - self.jitter):
            wait = first - age  # after a probe, the planned first check
        elif age < self._body_end:
            gap = self._body_gaps[int(_position(age))] if age > LOW else gap
            wait = gap if self._worth_a_check(age, gap) else self._next_worth_it(age, gap)
        else:
            wait = max(gap, self.tail_ratio * age)
        if wait > self.cap:
            wait = self.cap
        if rng is not None and self.jitter:
            wait *= 1.0 - self.jitter * rng.random()
        return wait if wait > self.min_gap else self.min_gap


class SimulationResult(NamedTuple):
    """What `simulate_polling` measured over the jobs it was given."""

    polls_per_job: float
    lag_p50: float
    lag_p99: float
    max_gap: float  # the longest wait between two polls of one job


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def simulate_polling(
    planner: PollPlanner | float,
    latencies: Iterable[float],
    rng: random.Random | None = None,
    *,
    learn: bool = True,
) -> SimulationResult:
    """Replay polling for jobs of the given create-to-ready ``latencies``, one after another.

    ``planner`` is a `PollPlanner` (which learns from each finished job when ``learn``) or
    a fixed interval in seconds (a hand-written loop: a check every interval from the
    create). Time is simulated and requests take no time; deterministic for a seeded ``rng``.
    """
    polls = 0
    lags: list[float] = []
    max_gap = 0.0
    for latency in latencies:
        age = 0.0
        previous = 0.0
        count = 0
        while True:
            if isinstance(planner, PollPlanner):
                wait = planner.delay(age, count, rng)
            else:
                wait = planner
            max_gap = max(max_gap, wait)
            previous, age = age, age + wait
            count += 1
            if age >= latency:
                break
        polls += count
        lags.append(age - latency)
        if learn and isinstance(planner, PollPlanner):
            planner.estimate.observe_interval(previous if count > 1 else 0.0, age)
    jobs = max(1, len(lags))
    return SimulationResult(polls / jobs, _percentile(lags, 0.5), _percentile(lags, 0.99), max_gap)


# -- discovered limits ------------------------------------------------------------------


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

    Sans-IO: every call takes ``now`` from the caller's clock.
    """

    __slots__ = (
        "_cooldown_until",
        "_slow_start",
        "ceiling",
        "cooldown",
        "decrease",
        "floor",
        "increase",
        "peak",
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
        self.value = self._clamp(initial)
        self.peak = self.value
        """The value before the last decrease (recovery aims back at it)."""
        self.throttles = 0
        """Throttles that decreased the value."""
        self._cooldown_until = -math.inf
        self._slow_start = True

    def _clamp(self, value: float) -> float:
        if self.ceiling is not None and value > self.ceiling:
            value = self.ceiling
        return value if value > self.floor else self.floor

    def on_success(self, now: float) -> None:
        """Count one request the provider accepted; grow the value a little."""
        if now < self._cooldown_until:
            return  # answers to requests sent before the decrease say nothing new
        value = self.value
        if self._slow_start:
            step = self.increase
        else:
            step = self.increase
            gap = self.peak - value
            if gap > 0.0 and self.recovery * gap > step:
                step = self.recovery * gap
            step /= value
        self.value = self._clamp(value + step)

    def on_throttle(self, now: float, sent_at: float | None = None) -> bool:
        """Count one 429/503; decrease unless cooling down. Return whether it decreased.

        ``sent_at``: when the throttled request was sent; a request sent before the last
        decrease took effect is part of the burst already answered for.
        """
        if now < self._cooldown_until or (
            sent_at is not None and sent_at < self._cooldown_until - self.cooldown
        ):
            return False
        self._slow_start = False
        self.peak = self.value
        self.value = self._clamp(self.value * self.decrease)
        self._cooldown_until = now + self.cooldown
        self.throttles += 1
        return True

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

    Args:
        limit: the rate, e.g. ``AIMDLimit(20.0, ceiling=user_cap)``.
        burst: requests allowed at once above the steady pace (1: strictly paced).
    """

    __slots__ = ("_busy_until", "_paused_until", "_tat", "burst", "limit")

    def __init__(self, limit: AIMDLimit, *, burst: float = 1.0) -> None:
        self.limit = limit
        self.burst = max(1.0, burst)
        self._tat = -math.inf
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

    def reserve(self, now: float) -> float:
        """Take one slot and return the seconds to wait before sending (0 when free)."""
        interval = 1.0 / self.limit.value
        tat = self._tat if self._tat > now else now
        if tat < self._paused_until:
            tat = self._paused_until
        delay = tat - (self.burst - 1.0) * interval - now
        self._tat = tat + interval
        if delay > 0.0:
            self._busy_until = self._tat + interval  # the rate held this request back
            return delay
        return 0.0

    def on_success(self, now: float) -> None:
        """Count one accepted request; the rate grows if it was the bottleneck."""
        if now <= self._busy_until:
            self.limit.on_success(now)

    def on_throttle(
        self, now: float, retry_after: float | None = None, sent_at: float | None = None
    ) -> None:
        """Count one 429/503: slow down, and pause everything for ``retry_after`` seconds."""
        self.limit.on_throttle(now, sent_at)
        self.pause(now, retry_after)

    def pause(self, now: float, retry_after: float | None) -> None:
        """Hold every request for ``retry_after`` seconds (the rate itself unchanged)."""
        if retry_after is not None and retry_after > 0.0:
            self._paused_until = max(self._paused_until, now + retry_after)
