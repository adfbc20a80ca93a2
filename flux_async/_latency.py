"""How long a provider's jobs take: a streaming estimate of create-to-ready times.

Sans-IO and allocation-free on the hot path: nothing here sleeps, reads a clock or touches a
socket. `LatencyEstimate` is a decaying log-spaced histogram of create-to-ready times, with
the provider's typical latency as a prior, saved and loaded as a few hundred bytes. When to
poll, given an estimate, is `_planner.PollPlanner`'s business.

Censored observations. A poll only tells that a job became ready after the last poll that
found it running and no later than the one that found it ready. `observe_interval` spreads
that one sample over the interval in proportion to the current estimate (one step of the
self-consistent, Turnbull/EM estimator), which is unbiased when the estimate is right, unlike
the midpoint, which pulls every sample of the first check towards half its time and so keeps
moving the first check earlier. When the estimate has no mass in the interval (the provider
changed) the sample goes to the interval's (geometric) midpoint. A small share of jobs get an
earlier "probe" first check (see the planner), so a provider that sped up is noticed even
though the normal first check finds everything already done.

Weights by creation. Given ``now`` (the caller's clock at the observation), a finished job
weighs what a sample weighed when the job was *created*, not when it ended: the estimate
then describes the jobs created over its window (a cohort), whether they have ended or not.
The ones still running are right-censored observations ("slower than its age"), which the
planner adds at plan time (`cohort_weight` weighs them the same way; Kaplan-Meier style).
Weighted by when they end instead, the first samples of a batch are its fastest jobs, and
the slow ones look late (the first wave of a 200-job batch used ~1.5x the polls). The times
of the last `MARKS` observations are kept to tell how many samples a job has lived through.
"""

from __future__ import annotations

import math
import struct
from array import array

__all__ = ["BUCKETS", "LOW", "MARKS", "LatencyEstimate", "bucket_position", "bucket_seconds"]

BUCKETS = 64
LOW = 0.05  # seconds; faster jobs count as 50 ms
HIGH = 1800.0  # seconds; slower jobs count as 30 min
_LOG_LOW = math.log(LOW)
_LOG_STEP = (math.log(HIGH) - _LOG_LOW) / BUCKETS  # each bucket is ~18 % wider than the last
_EDGES = tuple(math.exp(_LOG_LOW + i * _LOG_STEP) for i in range(BUCKETS + 1))
_RESCALE_AT = 1e100  # growing sample weights are folded back before they overflow
MARKS = 1024  # observation times kept for weights by creation (see the module docstring)

_MAGIC = b"FLXL"
_VERSION = 1
_HEADER = struct.Struct("<4sBBxxddd")  # magic, version, buckets, half_life, total, samples
_BODY = struct.Struct(f"<{BUCKETS}f")


def bucket_position(seconds: float) -> float:
    """Return the fractional bucket position of ``seconds`` (clamped to the histogram)."""
    if seconds <= LOW:
        return 0.0
    pos = (math.log(seconds) - _LOG_LOW) / _LOG_STEP
    return pos if pos < BUCKETS else BUCKETS - 1e-9


def bucket_seconds(position: float) -> float:
    """Return the seconds at a fractional bucket position (`bucket_position`'s inverse)."""
    return math.exp(_LOG_LOW + position * _LOG_STEP)


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
        "_marked",
        "_marks",
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
        self._marks = array("d", bytes(8 * MARKS))  # a ring of the last observations' times
        self._marked = 0  # observations given a time (the ring's next slot is this % MARKS)
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
            densities[round(bucket_position(typical))] = norm = 1.0
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
        top = min(int(bucket_position(high)) + 1, BUCKETS)
        for i in range(top):
            below_high += prior[i]
        above_low = 0.0
        for i in range(int(bucket_position(low)) if low > LOW else 0, BUCKETS):
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
    def counts(self) -> list[float]:
        """The histogram's buckets, in stored units (only their ratios mean anything).

        The estimate's own list, for readers that must not allocate (`PollPlanner`):
        never modify it.
        """
        return self._counts

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
        pos = bucket_position(seconds) if seconds > LOW else 0.0
        whole = int(pos)
        counts = self._counts
        cumulative = 0.0
        for i in range(whole):
            cumulative += counts[i]
        cumulative += counts[whole] * (pos - whole)
        return min(1.0, cumulative / total)

    # -- learning -----------------------------------------------------------------------

    def cohort_weight(self, created: float) -> float:
        """Return the stored weight of a sample of a job created at ``created``.

        ``created`` is on the clock of the ``now`` given to ``observe*``: the weight a new
        sample had then (by the observations given a time since). Without such
        observations, or for a job older than the last `MARKS` of them, as old as they go.
        """
        marks = self._marks
        marked = self._marked
        kept = marked if marked < MARKS else MARKS
        # Binary search: how many of the kept observations came after ``created``.
        low, high = 0, kept  # the answer is in [low, high]
        oldest = marked - kept
        while low < high:
            middle = (low + high) >> 1
            if marks[(oldest + kept - 1 - middle) % MARKS] > created:
                low = middle + 1
            else:
                high = middle
        return self._gain * self._decay**low

    def _mark(self, now: float) -> None:
        self._marks[self._marked % MARKS] = now
        self._marked += 1

    def _next_weight(self, created: float | None = None) -> float:
        """Age every stored sample by one step and return the stored weight of a new one
        (created at ``created``: see `cohort_weight`)."""
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
        weight = gain if created is None else self.cohort_weight(created)
        self._samples += weight
        self._total += weight
        self.version += 1
        return weight

    def observe(self, seconds: float, now: float | None = None) -> None:
        """Learn one exact create-to-ready time (a webhook, a synchronous answer).

        ``now``: the caller's clock (seconds, any origin): the sample is weighted by when
        the job was created (see the module docstring); ``None``: as a new sample.
        """
        if not math.isfinite(seconds):
            return
        if self._prior is not None:
            self._drop_prior_if_contradicted(seconds, seconds)
        weight = self._next_weight(None if now is None else now - seconds)
        self._counts[int(bucket_position(seconds))] += weight
        if now is not None:
            self._mark(now)

    def observe_interval(
        self, not_ready_at: float, ready_at: float, now: float | None = None
    ) -> None:
        """Learn a job found running at ``not_ready_at`` and ready at ``ready_at`` (seconds).

        ``not_ready_at`` is 0 when the first poll found the job ready. The sample is spread
        over the interval as the current estimate spreads its own mass there (see the
        module docstring); where that is empty, it goes to the interval's midpoint.
        ``now``: as for `observe` (the job was created at ``now - ready_at``).
        """
        if not (math.isfinite(ready_at) and math.isfinite(not_ready_at)):
            return
        if ready_at <= not_ready_at:
            self.observe(ready_at, now)
            return
        if self._prior is not None:
            self._drop_prior_if_contradicted(not_ready_at, ready_at)
        start = bucket_position(not_ready_at) if not_ready_at > LOW else 0.0
        end = bucket_position(ready_at)
        first, last = int(start), int(end)
        counts = self._counts
        mass = 0.0
        for i in range(first, last + 1):
            overlap = min(end, i + 1.0) - max(start, float(i))
            if overlap > 0.0:
                mass += counts[i] * overlap
        weight = self._next_weight(None if now is None else now - ready_at)
        if now is not None:
            self._mark(now)
        if mass <= 1e-9 * self._total:
            if not_ready_at > LOW:
                middle = math.sqrt(not_ready_at * ready_at)
            else:
                middle = 0.5 * (not_ready_at + ready_at)
            counts[int(bucket_position(middle))] += weight
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
