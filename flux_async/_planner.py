"""When to poll a job: `PollPlanner` turns a `LatencyEstimate` into each job's next wait.

Sans-IO: callers pass a job's age and a `random.Random`. The plan is computed from the
estimate plus the jobs still running (a `Census`: right-censored observations, added
Kaplan-Meier style), so a batch whose slow jobs have not ended yet is not planned from its
fast ones alone. `ModelPlan` holds the poll lane's decisions around a planner (scouts,
moving first polls earlier). `simulate_polling` replays a plan offline over jobs one after
another, `replay_batch`/`simulate_batch` over a batch with jobs in flight, taking the lane's
and its scheduler's decisions; both are deterministic for a seeded rng (tests and tuning).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable
from typing import NamedTuple

from ._latency import BUCKETS, LOW, LatencyEstimate, bucket_position, bucket_seconds
from ._scheduler import COALESCE_LONG_WAIT, PollScheduler, coalesced_due, grid_step, on_grid

#: The jobs still running, for censoring: for each, its creation time (on the clock of the
#: ``now`` given to the estimate's ``observe*``) and its age at the last poll that found it
#: running (0: not polled yet, which tells nothing).
Census = Callable[[], Iterable[tuple[float, float]]]

__all__ = [
    "SCOUTS",
    "SCOUT_FIRST",
    "Census",
    "ModelPlan",
    "PollPlanner",
    "ReplayedJob",
    "SimulationResult",
    "replay_batch",
    "simulate_batch",
    "simulate_polling",
]

#: Jobs polled early while a model has no finished job yet, and the first check of the first
#: of them (the k-th checks first at ``SCOUT_FIRST * 2 ** (k / SCOUTS)``, then each at
#: twice its age: together they check at ages ~6 % apart).
SCOUTS = 12
SCOUT_FIRST = 0.15

#: The share by which waits from a job's third poll on may come early (see `delay`): any
#: amount up to it for a short wait, a whole grid step with the same mean for a long one.
LATER_JITTER = 0.05

#: Long waits (half a second or more): the lag target is shortened by this share (a margin
#: on the p99 lag where a loop polls at the same interval), and a wait comes a whole grid
#: step early with this probability (see `delay`).
LONG_MARGIN = 0.025
LONG_STEP_EARLY = 0.05

#: A probe's first check, as a share of the planned first check's age (see `PollPlanner`).
PROBE_START, PROBE_END = 0.3, 0.7
#: First polls below this share of the planned first check are probes (`PollPlanner.probed`).
PROBE_LIMIT = 0.8
#: The probes' memory: a probe counts half after this many newer ones.
PROBE_HALF_LIFE = 128.0
#: The start is taken from the probes when they reject the estimate's low end by this much
#: log-likelihood, and then the earliest onset within `LOW_END_SLACK` of the best (see
#: `PollPlanner._low_end`).
LOW_END_REJECT = 2.0
LOW_END_SLACK = 0.25
_ONSETS = 12  # candidate onsets tried, evenly over [0, 2/3) of the first check's age
_REFINE = 6  # then as many between the two around the earliest one within the slack
_PROBE_BINS = 2 * BUCKETS  # probes' ages, binned twice as finely as the estimate
_PROBE_GROWTH = 2.0 ** (1.0 / PROBE_HALF_LIFE)


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
       speed), the next check goes where that share will have ended (unless `censored`:
       then no further than the tail's back-off);
    3. past ``quantile(late)`` the job is slower than the estimate knows: the wait grows
       with its age (``tail_ratio * age``, i.e. exponentially), up to ``cap``.

    The quantiles are the plan's: the estimate's, plus the jobs still running when a
    `running` census is set. So for a correct estimate the p99 detection lag is about ``D``
    when ``early + (1 - late) <= 1 %``. Each wait is at least ``min_gap`` and at most
    ``cap``. The first is shortened by up to ``jitter`` (a fraction; of the lag target at
    most once the start is fitted to the probes): jobs created together are checked apart,
    and stay apart, as their later waits depend on their ages only. From the third poll
    on, waits come early by half of `LATER_JITTER` on average, a margin on the p99 lag:
    short ones by up to that share, long ones (half a second or more) by a whole grid step
    of the scheduler now and then. No check comes later than planned, so the lag bound holds
    (full jitter, ``U(0, wait)``, would halve the waits and double the requests). Long
    waits, ``D`` among them, are whole numbers of the scheduler's grid steps (`on_grid`:
    rounded by at most a ninth), which moves polls up to 1/16 of a short wait or 1/4 of a
    long one earlier to share wake-ups (`coalesced_due`): a job polled every ``D`` stays on
    one grid slot, a few wake-ups a second for the whole batch. Without the random step,
    jobs polled at the same ages forever teach an estimate that cannot tell where in
    between they ended (a provider that slowed down was then found up to 7 s late in the
    replays). A share ``probe``
    of jobs get their first check at 30-70 % of the planned time: they keep a provider that
    sped up from hiding behind a first check that finds everything done, and they tell
    where the jobs that first check finds ready ended (`probed`, `_low_end`).

    Ages are seconds since the create was sent. The plan (the estimate's quantiles and the
    gaps by age) is cached: it is computed again after every change of the estimate while it
    holds fewer than `WARM` real samples, and after every `REFRESH_EVERY` changes from then
    on (a change then moves a quantile by well under 1 %, and refreshing once per finished
    job was ~10 % of a fast batch's CPU). A call is O(1) but for those; no call allocates.
    """

    #: Real samples from which the plan is refreshed only every `REFRESH_EVERY` changes.
    WARM = 64.0
    REFRESH_EVERY = 8

    __slots__ = (
        "_body_end",
        "_body_gaps",
        "_censored",
        "_censored_created",
        "_cumulative",
        "_due",
        "_first",
        "_fitted",
        "_gap",
        "_plan",
        "_probe_age",
        "_probe_fit",
        "_probe_gain",
        "_probe_ready",
        "_probe_weight",
        "_probes",
        "_step",
        "cap",
        "censored",
        "early",
        "estimate",
        "jitter",
        "lag_floor",
        "lag_ratio",
        "late",
        "max_body_polls",
        "min_gap",
        "probe",
        "running",
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
        early: float = 0.003,
        late: float = 0.999,
        max_body_polls: int = 128,
        tail_ratio: float = 0.1,
        jitter: float = 0.1,
        probe: float = 0.05,
        worth: float = 0.02,
        running_ratio: float = 0.025,
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
        self.censored = False
        """Set while more jobs are running than the estimate has samples (the first of a
        batch): the estimate then holds the fast jobs only, and a stretch it says no job
        ends in is not skipped at once."""
        self.jitter = jitter
        self.probe = probe
        self.worth = worth
        self.running_ratio = running_ratio
        self.running: Census | None = None
        """The jobs still running (see `Census`): each adds "slower than my age" to the plan
        (Kaplan-Meier style), so the jobs of a batch that have not ended yet are not left
        out of it. ``None``: the plan is the estimate's."""
        self._cumulative = [0.0] * (BUCKETS + 1)
        self._plan = [0.0] * BUCKETS  # the estimate's counts plus the censored jobs
        self._censored = [0.0] * BUCKETS  # census scratch: weights by age bucket
        self._censored_created = [0.0] * BUCKETS  # census scratch: their creation times' sums
        self._body_gaps = [0.0] * BUCKETS
        self._due = -1  # the estimate's version at which the plan is computed again
        self._first = self._gap = self._body_end = self._step = 0.0
        # Probes (first polls well before the first check: see `probed`), binned by age:
        # weight, weight found ready, weighted age sum; a new probe weighs `_probe_gain`.
        self._probe_weight = [0.0] * _PROBE_BINS
        self._probe_ready = [0.0] * _PROBE_BINS
        self._probe_age = [0.0] * _PROBE_BINS
        self._probe_gain = 1.0
        self._probes = 0.0  # their total weight, in units of a new probe
        self._probe_fit = (-1.0, -1.0)  # (`_probe_gain` when fitted, the onset or -1: none)
        self._fitted = False  # whether the plan's start is the probes' (`_low_end`)

    def _refresh(self) -> None:
        estimate = self.estimate
        warm = estimate.samples >= self.WARM
        self._due = estimate.version + (self.REFRESH_EVERY if warm else 1)
        self._step = 0.0
        if estimate.weight <= 0.0:  # nothing known: exponential growth from the start
            self._first = self._body_end = 0.0
            self._gap = max(self.min_gap, self.lag_floor)
            return
        plan = self._plan
        plan[:] = estimate.counts
        if self.running is not None:
            self._censor()
        cumulative = self._cumulative
        total = 0.0
        for i in range(BUCKETS):
            cumulative[i] = total
            total += plan[i]
        cumulative[BUCKETS] = total
        start = self._quantile(self.early)
        end = self._quantile(self.late)
        gap = max(self.lag_floor, self.lag_ratio * self._quantile(0.5), self.min_gap)
        self._fitted = False
        if self._probes >= 8.0:
            start = self._low_end(start, gap)
        first = start + gap
        if end - first > gap * self.max_body_polls:
            gap = (end - first) / self.max_body_polls
        gap = min(gap, self.cap)
        if gap >= COALESCE_LONG_WAIT:
            # A whole number of grid steps: a job polled every ``gap`` stays on one grid
            # slot and shares its wake-ups. The lag target is rounded onto a coarse ladder
            # (`on_grid`), so it moves in whole steps as the estimate does, then shortened
            # by `LONG_MARGIN`, and the grid is a whole share of it (a quarter to a
            # seventh): jobs of a model share four to seven wake-ups per lag target.
            ladder = on_grid(gap)
            steps = round(ladder / grid_step(ladder))
            gap = ladder * (1.0 - LONG_MARGIN)
            self._step = gap / steps
        self._gap = gap
        self._first = min(first, self.cap)
        self._body_end = end
        # The lag target of a job still running at an age: at least ``running_ratio`` of
        # the median latency of the jobs still running then. A provider that slowed down
        # is polled in proportion to its new latency while the old fast median still
        # dominates the estimate; for one mode it changes nothing below the median's D.
        # One pass: the running median's bucket only moves forward as the age grows.
        ratio = self.running_ratio
        gaps = self._body_gaps
        counts = plan
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
            running_median = bucket_seconds(j + min(fraction, 1.0))
            gaps[i] = self._on_step(min(self.cap, max(gap, ratio * running_median)))

    def probed(self, age: float, ready: bool) -> None:
        """Learn a job's first poll: at ``age`` seconds it found the job ``ready`` or not.

        Only first polls well before the planned first check count (the probes, and scouts
        before the first finished job): the estimate cannot tell where below the first
        check the jobs it finds ready ended, and these are the only polls that can.
        """
        if age >= PROBE_LIMIT * self._first or age <= 0.0:
            return
        gain = self._probe_gain * _PROBE_GROWTH
        if gain > 1e100:  # fold the weights back before they overflow
            for bins in (self._probe_weight, self._probe_ready, self._probe_age):
                for i in range(_PROBE_BINS):
                    bins[i] /= gain
            gain = 1.0
        self._probe_gain = gain
        i = int(2.0 * bucket_position(age)) if age > LOW else 0
        self._probe_weight[i] += gain
        self._probe_age[i] += gain * age
        if ready:
            self._probe_ready[i] += gain
        self._probes = self._probes / _PROBE_GROWTH + 1.0

    def _low_end(self, start: float, gap: float) -> float:
        """The plan's start (the age before which only the ``early`` share of jobs end),
        checked against the probes.

        The estimate's start comes from where it spread the jobs that their first check
        found ready, which only probes can tell, and ~100 of them cannot place a 0.3 %
        quantile. So the start is the estimate's unless the probes reject its low end
        (current-status likelihood: each probe a Bernoulli of the cdf at its age) by
        `LOW_END_REJECT` against the best of a family of low ends: a cdf rising linearly
        from an onset ``c`` to the estimate's own value at the first check (a uniform
        distribution's low end). Then the start is that family's ``early`` quantile for
        the earliest onset within `LOW_END_SLACK` of the best: conservative, but no longer
        held early by where the first samples happened to put the low end (one-step EM
        keeps that mass there for good; at the arithmetic midpoint of the first scout's
        interval, half the first check early).
        """
        first = start + gap
        total = self._cumulative[BUCKETS]
        anchor = self._cdf(first) / total
        if not 0.01 < anchor < 0.99:
            return start
        fitted_at, onset = self._probe_fit
        if fitted_at != self._probe_gain:  # new probes since the last fit
            onset = self._fit_onset(first, anchor, total)
            self._probe_fit = (self._probe_gain, onset)
        if onset < 0.0 or onset >= first:
            return start
        self._fitted = True
        return onset + self.early * (first - onset) / anchor

    def _fit_onset(self, first: float, anchor: float, total: float) -> float:
        """The onset `_low_end` takes, or -1 when the probes do not reject the estimate."""
        weights, readies, ages = self._probe_weight, self._probe_ready, self._probe_age
        observed: list[tuple[float, float, float]] = []
        log = math.log
        fitted = 0.0  # the estimate's log-likelihood
        for i in range(min(_PROBE_BINS, int(2.0 * bucket_position(first)) + 1)):
            weight = weights[i]
            if weight <= 0.0:
                continue
            age = ages[i] / weight
            if age >= first:
                break
            ready = readies[i] / weight
            observed.append((age, ready, weight))
            cdf = min(max(self._cdf(age) / total, 1e-4), 1.0 - 1e-4)
            fitted += weight * (ready * log(cdf) + (1.0 - ready) * log(1.0 - cdf))
        if not observed:
            return -1.0

        def score(onset: float) -> float:
            slope = anchor / (first - onset)
            loglik = 0.0
            for age, ready, weight in observed:
                cdf = (age - onset) * slope if age > onset else 0.0
                cdf = 1e-4 if cdf < 1e-4 else 1.0 - 1e-4 if cdf > 1.0 - 1e-4 else cdf
                loglik += weight * (ready * log(cdf) + (1.0 - ready) * log(1.0 - cdf))
            return loglik

        # Onsets over [0, 2/3 of the first check): a coarse pass, then the step before the
        # earliest one within the slack, finer.
        step = first / (1.5 * _ONSETS)
        scores = [score(j * step) for j in range(_ONSETS)]
        best = max(scores)
        scale = self._probe_gain  # the weights are in units of a new probe's
        if (best - fitted) / scale < LOW_END_REJECT:
            return -1.0
        j = next(j for j, value in enumerate(scores) if (best - value) / scale <= LOW_END_SLACK)
        if j == 0:
            return 0.0
        for k in range(1, _REFINE):
            onset = (j - 1 + k / _REFINE) * step
            if (best - score(onset)) / scale <= LOW_END_SLACK:
                return onset
        return j * step

    def _censor(self) -> None:
        """Add the jobs still running to `_plan`: each, weighted as a sample of its creation
        time, is spread over the ages beyond its own in proportion to the plan's mass there
        (Efron's redistribute-to-the-right, which is the Kaplan-Meier estimate); where the
        plan has no mass beyond, just beyond its age (a slower provider than ever seen)."""
        assert self.running is not None
        estimate = self.estimate
        censored = self._censored
        created = self._censored_created
        for i in range(BUCKETS):
            censored[i] = created[i] = 0.0
        any_running = False
        for start, age in self.running():
            if age <= 0.0:
                continue  # not polled yet: nothing known
            i = int(bucket_position(age)) if age > LOW else 0
            censored[i] += 1.0
            created[i] += start
            any_running = True
        if not any_running:
            return
        for i in range(BUCKETS):
            jobs = censored[i]
            if jobs > 0.0:
                censored[i] = jobs * estimate.cohort_weight(created[i] / jobs)
        plan = self._plan
        suffix = self._cumulative  # scratch: the mass from bucket i up, censored included
        beyond = 0.0
        for i in range(BUCKETS - 1, -1, -1):
            beyond += plan[i] + censored[i]
            suffix[i] = beyond
        suffix[BUCKETS] = 0.0
        scale = 1.0  # how much the mass from here up has grown so far
        for i in range(BUCKETS):
            own = plan[i]
            weight = censored[i]
            if weight <= 0.0:
                plan[i] = own * scale
                continue
            # Censored in the middle of bucket i: to half of it and everything above, the
            # jobs censored further up included (they pass it on in turn).
            weight *= scale
            above = scale * (0.5 * own + suffix[i + 1])
            if above <= 1e-12 * weight:
                plan[i] = own * scale
                if i + 1 < BUCKETS:
                    plan[i + 1] += weight / scale  # scaled by ``scale`` when reached
                    suffix[i + 1] += weight / scale
                else:
                    plan[i] += weight
                continue
            grow = 1.0 + weight / above
            plan[i] = own * scale * 0.5 * (1.0 + grow)
            scale *= grow

    def _quantile(self, q: float) -> float:
        """The plan's quantile (the estimate's, censored jobs included): O(buckets)."""
        cumulative = self._cumulative
        target = q * cumulative[BUCKETS]
        plan = self._plan
        last = 0
        for i in range(BUCKETS):
            count = plan[i]
            if count <= 0.0:
                continue
            last = i
            if cumulative[i] + count >= target:
                return bucket_seconds(i + (target - cumulative[i]) / count)
        return bucket_seconds(last + 1)

    @property
    def lag_target(self) -> float:
        """The detection lag the plan aims at (``D``), in seconds."""
        if self.estimate.version >= self._due:
            self._refresh()
        return self._gap

    @property
    def grid(self) -> float:
        """The grid step the scheduler rounds this plan's long waits down onto (0: none),
        in seconds: a whole share of the lag target when that is half a second or more."""
        if self.estimate.version >= self._due:
            self._refresh()
        return self._step

    def _on_step(self, wait: float) -> float:
        """``wait`` rounded to a whole number of grid steps (at least one), if there is a grid."""
        step = self._step
        if step <= 0.0:
            return wait
        steps = round(wait / step)
        return (steps if steps > 1 else 1) * step

    @property
    def first_check(self) -> float:
        """The planned age of the first check (before jitter and probes), in seconds."""
        if self.estimate.version >= self._due:
            self._refresh()
        return self._first

    def _cdf(self, seconds: float) -> float:
        """The estimate's cdf in O(1), from the cumulative sums cached by `_refresh`."""
        pos = bucket_position(seconds) if seconds > LOW else 0.0
        whole = int(pos)
        partial: float = self._plan[whole] * (pos - whole)
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
        return max(gap, self._quantile(target) - age)

    def delay(self, age: float, polls_so_far: int, rng: random.Random | None) -> float:
        """Return the seconds to wait before polling a job that is ``age`` seconds old.

        ``polls_so_far`` counts the polls that found it running (0 before the first).
        ``rng=None``: no jitter and no probes (a deterministic plan).
        """
        if self.estimate.version >= self._due:
            self._refresh()
        gap = self._gap
        first = self._first
        if polls_so_far == 0 and age < first:
            wait = first - age
            if rng is not None and rng.random() < self.probe:
                wait *= rng.uniform(PROBE_START, PROBE_END)
        elif age < PROBE_LIMIT * first:
            wait = first - age  # after a probe, the planned first check
        elif age < self._body_end:
            gap = self._body_gaps[int(bucket_position(age))] if age > LOW else gap
            if self._worth_a_check(age, gap):
                wait = gap
            else:
                wait = self._next_worth_it(age, gap)
                if self.censored:
                    # The estimate does not know the slow jobs yet (a batch learns its fast
                    # jobs first): a skip grows no faster than the tail's back-off.
                    limit = self.tail_ratio * age
                    if wait > limit:
                        wait = limit if limit > gap else gap
        else:
            wait = max(gap, self.tail_ratio * age)
        if wait > self.cap:
            wait = self.cap
        if rng is not None and self.jitter and polls_so_far == 0:
            # Up to `jitter` of the wait earlier; of the lag target at most once the start
            # is a confidence bound (`_low_end`), which needs no margin from the jitter.
            span = gap if self._fitted and gap < wait else wait
            wait -= self.jitter * span * rng.random()
        elif rng is not None and polls_so_far > 1:
            # From the third poll on, up to `LATER_JITTER` earlier: a margin on the lag
            # target where the loop polls at the same interval (a tie at its p99 otherwise);
            # not the second, which a fast job's first check leaves at the end of its range.
            if wait < COALESCE_LONG_WAIT:
                wait *= 1.0 - LATER_JITTER * rng.random()
            else:
                # A long wait keeps its job on the scheduler's grid (see `on_grid`): the
                # same mean, as a whole grid step early now and then.
                step = self._step if self._step > 0.0 else grid_step(wait)
                if wait > step and rng.random() < LONG_STEP_EARLY:
                    wait -= step
        return wait if wait > self.min_gap else self.min_gap


class ModelPlan:
    """What a poll lane learned about one model, and the decisions it takes from it.

    Sans-IO, shared by `_poll.PollLane` and `simulate_batch` so the replay takes the lane's
    decisions. While the model has no finished job, the first `SCOUTS` jobs are "scouts",
    polled at doubling ages from `SCOUT_FIRST` (staggered, so that between them the ages
    they check are ~6 % apart), so a provider much faster than its typical latency is found
    at once; when the first check then drops below half of what the jobs already waiting
    were planned with, `learned` says to move their first polls earlier (`moved_first`).
    Before the scouts were staggered, a batch of 0.1-0.3 s jobs whose four scouts all took
    longer than 0.15 s learned nothing until 0.3 s, and its first wave was found up to 0.3 s
    late (a tenth of a 2,000-job batch: its p99 lag). With 8 staggered scouts that still
    happened to about one batch in 40 (their first 6 checks, up to 0.23 s, all too early);
    with 12, to about one in 300.
    """

    __slots__ = ("estimate", "planned_first", "planner", "scouts")

    def __init__(
        self, estimate: LatencyEstimate, cap: float, running: Census | None = None
    ) -> None:
        self.estimate = estimate
        self.planner = PollPlanner(estimate, cap=cap)
        self.planner.running = running
        self.planned_first = self.planner.first_check
        self.scouts = 0

    def first_wait(self, waiting: int, rng: random.Random | None) -> tuple[float, bool]:
        """The wait before a new job's first poll, and whether it scouts; ``waiting``: the
        jobs already waiting for a poll."""
        planner = self.planner
        # Fewer samples than jobs waiting: the first of a batch, whose fast jobs end first.
        planner.censored = self.estimate.samples < waiting
        wait = planner.delay(0.0, 0, rng)
        if self.estimate.samples < 1.0 and self.scouts < SCOUTS:
            first = SCOUT_FIRST * 2.0 ** (self.scouts / SCOUTS)
            if wait > first:
                self.scouts += 1
                return first, True
        return wait, False

    def next_wait(self, age: float, polls: int, scout: bool, rng: random.Random | None) -> float:
        """The wait before the next poll of a job ``age`` seconds old found running
        ``polls`` times."""
        wait = self.planner.delay(age, polls, rng)
        if scout and age < wait:
            return age if age > SCOUT_FIRST else SCOUT_FIRST  # the next at twice the age
        return wait

    def learned(self, waiting: int) -> bool:
        """After an observation: whether the waiting jobs' first polls should move earlier
        (to `PollPlanner.first_check` after their creation)."""
        planner = self.planner
        planner.censored = self.estimate.samples < waiting
        first = planner.first_check
        if first < 0.5 * self.planned_first:
            self.planned_first = first
            return True
        if first > self.planned_first:
            self.planned_first = first
        return False

    def moved_first(self, created: float, now: float, rng: random.Random | None) -> float:
        """When a waiting job's first poll moves to (see `learned`), on the clock of ``now``:
        its new first check after ``created``; if that has passed, now, spread over a
        `PollPlanner.jitter` share of the lag target (a burst, not late polls)."""
        planner = self.planner
        due = created + planner.first_check
        if due < now:
            spread = planner.jitter * planner.lag_target
            due = now + (spread * rng.random() if rng is not None else 0.0)
        return due

    def moved_scout(self, created: float, running_age: float, now: float) -> float:
        """When a scout waiting for its next poll moves to (see `learned`), on the clock of
        ``now``: the lag target after its last poll (at ``running_age``), or now if that
        has passed. A scout polled before the model learned anything waits twice its age
        (0.15-0.28 s for its second poll): on jobs done in a fraction of a second it was
        found up to that late, and the scouts were ~1 of the 20 jobs over a 2,000-job
        batch's p99 lag."""
        due = created + running_age + self.planner.lag_target
        return due if due > now else now


class ReplayedJob(NamedTuple):
    """What `replay_batch` saw of one job."""

    latency: float
    lag: float  # from ready to the poll that found it ready
    polls: int
    max_gap: float  # its longest wait between two polls
    created: float  # simulated seconds from the batch's start


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


def simulate_batch(
    planner: PollPlanner | float,
    latencies: Iterable[float],
    concurrency: int,
    rng: random.Random | None = None,
    *,
    cap: float = 15.0,
) -> SimulationResult:
    """Replay a batch (see `replay_batch`) and summarize it."""
    jobs = replay_batch(planner, latencies, concurrency, rng, cap=cap)
    lags = [job.lag for job in jobs]
    polls = sum(job.polls for job in jobs)
    max_gap = max((job.max_gap for job in jobs), default=0.0)
    return SimulationResult(
        polls / max(1, len(jobs)), _percentile(lags, 0.5), _percentile(lags, 0.99), max_gap
    )


def replay_batch(
    planner: PollPlanner | float,
    latencies: Iterable[float],
    concurrency: int,
    rng: random.Random | None = None,
    *,
    cap: float = 15.0,
) -> list[ReplayedJob]:
    """Replay a batch: ``concurrency`` jobs in flight, a new one created as one ends.

    Unlike `simulate_polling`, jobs overlap, and a `PollPlanner` learns only from the jobs
    that have ended, as a client does: its first samples are the batch's fastest jobs. The
    replay takes `PollLane`'s decisions (a `ModelPlan` over the planner's estimate: scouts,
    first polls and scouts' next polls moved earlier, the jobs still running as censored
    observations) and its scheduler's (polls a little early, to share wake-ups:
    `coalesced_due`; a first poll due within `PollScheduler.FIRST_EXACT_WAIT` at its
    planned age).
    ``planner`` a float: the hand-written loop's interval. Simulated time; deterministic
    for a seeded ``rng``.

    Returns:
        What happened to each job, in creation order (`simulate_batch` sums it up).
    """
    pending = iter(latencies)
    interval = 0.0 if isinstance(planner, PollPlanner) else planner
    # number -> [due, start, latency, polls, previous age, scout, longest wait]
    running: dict[int, list[float]] = {}
    now = 0.0

    def census() -> Iterable[tuple[float, float]]:
        return ((job[1], job[4]) for job in running.values())

    model: ModelPlan | None = None
    if isinstance(planner, PollPlanner):
        model = ModelPlan(planner.estimate, cap)
        model.planner = planner
        planner.running = census
        model.planned_first = planner.first_check
    heap: list[tuple[float, int]] = []  # due, number (stale when the job's due differs)
    created = 0
    ended: dict[int, ReplayedJob] = {}

    def push(number: int, job: list[float], due: float) -> None:
        job[0] = due
        heapq.heappush(heap, (due, number))

    def create() -> None:
        nonlocal created
        latency = next(pending, None)
        if latency is None:
            return
        created += 1
        scout = False
        wait = interval
        if model is not None:
            wait, scout = model.first_wait(len(running), rng)
        job = [0.0, now, latency, 0.0, 0.0, 1.0 if scout else 0.0, wait]
        running[created] = job
        # As `PollScheduler.add`: a short first wait is not moved onto the grid.
        if model is None or wait < PollScheduler.FIRST_EXACT_WAIT:
            due = now + wait
        else:
            due = coalesced_due(now, wait, model.planner.grid)
        push(created, job, due)

    for _ in range(concurrency):
        create()
    while heap:
        due, number = heapq.heappop(heap)
        job = running.get(number)
        if job is None or job[0] != due:
            continue  # ended, or moved
        now = due
        start, latency, previous = job[1], job[2], job[4]
        age = now - start
        job[3] += 1
        if model is not None and job[3] == 1:
            model.planner.probed(age, age >= latency)
        if age >= latency:
            del running[number]
            ended[number] = ReplayedJob(latency, age - latency, int(job[3]), job[6], start)
            if model is not None:
                model.estimate.observe_interval(previous if job[3] > 1 else 0.0, age, now)
                if model.learned(len(running)):
                    for other, waiting in running.items():
                        if waiting[3]:  # polled already: only a scout moves
                            if waiting[5]:
                                moved = model.moved_scout(waiting[1], waiting[4], now)
                                if moved < waiting[0]:
                                    push(other, waiting, moved)
                            continue
                        moved = model.moved_first(waiting[1], now, rng)
                        if moved < waiting[0]:
                            push(other, waiting, moved)
            create()
            continue
        if model is not None:
            model.planner.censored = model.estimate.samples < len(running)
            wait = model.next_wait(age, int(job[3]), bool(job[5]), rng)
        else:
            wait = interval
        if wait > job[6]:
            job[6] = wait
        job[4] = age
        due = now + wait if model is None else coalesced_due(now, wait, model.planner.grid)
        push(number, job, due)
    return [ended[number] for number in sorted(ended)]
