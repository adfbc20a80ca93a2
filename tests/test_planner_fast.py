"""The start of the poll plan (its first check) for jobs much faster than the provider's
typical latency: placed from the probes, not only from where the first samples fell.

All simulated time (`_planner.replay_batch`, `PollPlanner.delay`), no wall clock."""

from __future__ import annotations

import random
import statistics

from flux_async._latency import LatencyEstimate
from flux_async._planner import (
    PROBE_END,
    PROBE_START,
    SCOUT_FIRST,
    SCOUTS,
    PollPlanner,
    simulate_batch,
)


def fast_jobs(seed: int, jobs: int = 2000) -> list[float]:
    """bench_batch.py's ``fast`` distribution: 200 ms +- 100 (its loop polls every 0.1 s)."""
    rng = random.Random(seed)
    return [rng.uniform(0.1, 0.3) for _ in range(jobs)]


def low_end_stuck_early(seed: int = 0) -> tuple[PollPlanner, random.Random]:
    """A planner over 0.1-0.3 s jobs whose estimate put its low end where the first scout's
    interval (0, 0.15] had its midpoint, as a batch's does: every job its first check then
    finds ready is spread there too, and the plan's first check stays near 0.17 s."""
    estimate = LatencyEstimate(None)
    estimate.observe_interval(0.0, 0.15)
    planner = PollPlanner(estimate)
    rng = random.Random(seed)
    for _ in range(300):
        first = planner.first_check
        latency = rng.uniform(0.1, 0.3)
        if latency <= first:
            estimate.observe_interval(0.0, first)
        else:
            estimate.observe_interval(first, first + planner.lag_target)
    return planner, rng


def replan(planner: PollPlanner, latency: float) -> None:
    """Teach ``planner`` enough jobs found ready at ``latency`` to compute its plan again (a
    warm plan is refreshed every `PollPlanner.REFRESH_EVERY` changes)."""
    for _ in range(PollPlanner.REFRESH_EVERY):
        planner.estimate.observe_interval(0.0, latency)


def test_a_fast_batch_costs_at_most_0_81x_the_loops_requests_at_its_p99_lag() -> None:
    """Before: 0.74-0.87x on these seeds (mean 0.83x), the first check held at 0.17-0.18 s
    by the first samples, and one seed's first wave 35 ms over the loop's p99 lag; now
    0.73-0.83x (mean 0.78-0.80x). The bound for any schedule is 0.72x (polls at exactly 0.2
    and 0.3 s)."""
    ratios = []
    for seed in range(8):
        latencies = fast_jobs(seed)
        learned = simulate_batch(
            PollPlanner(LatencyEstimate(8.0)), latencies, 200, random.Random(seed)
        )
        loop = simulate_batch(0.1, latencies, 200)
        ratios.append((1.0 + learned.polls_per_job) / (1.0 + loop.polls_per_job))
        assert learned.lag_p99 <= loop.lag_p99 + 0.01
    assert statistics.mean(ratios) <= 0.81, ratios


def test_probes_that_reject_the_low_end_move_the_first_check_to_the_jobs_onset() -> None:
    planner, rng = low_end_stuck_early()
    stuck = planner.first_check
    assert stuck < 0.18  # where the first samples put it
    for _ in range(100):
        age = stuck * rng.uniform(PROBE_START, PROBE_END)
        planner.probed(age, rng.uniform(0.1, 0.3) <= age)
    replan(planner, stuck)
    # The true start is 0.1 s (+ the 0.1 s lag target): later than before, but conservative,
    # since no job may end more than the lag target before its first check.
    assert 0.185 <= planner.first_check <= 0.2 + 1e-3
    assert planner.lag_target == 0.1


def test_probes_that_agree_with_the_estimate_leave_the_first_check_alone() -> None:
    """A long tail (median 8 s, sigma 0.6): ~100 probes see almost no job end before the
    first check, as the estimate says; they do not prove it wrong, so its start stays."""
    rng = random.Random(3)
    estimate = LatencyEstimate(None)
    for _ in range(400):
        estimate.observe(rng.lognormvariate(2.0794, 0.6))
    planner = PollPlanner(estimate)
    before = planner.first_check
    for _ in range(100):
        age = before * rng.uniform(PROBE_START, PROBE_END)
        planner.probed(age, rng.lognormvariate(2.0794, 0.6) <= age)
    for _ in range(PollPlanner.REFRESH_EVERY):
        estimate.observe(8.0)
    # Eight more samples move the estimate's own start a little, nothing more.
    assert abs(planner.first_check - before) < 0.02 * before


def test_later_polls_than_the_probes_limit_are_not_probes() -> None:
    planner, _ = low_end_stuck_early()
    first = planner.first_check
    for _ in range(50):
        planner.probed(0.9 * first, False)  # first checks (as probes, they would reject it)
        planner.probed(0.0, True)  # never polled
    replan(planner, first)
    assert abs(planner.first_check - first) < 0.01


def test_a_slightly_early_first_check_is_not_followed_by_another_at_the_planned_one() -> None:
    """The scheduler floors a learned poll onto a grid of up to 1/16 of its wait, so a first
    check jittered by 10 % comes up to ~16 % early. Before, one below 90 % of the planned age
    was taken for a probe and checked again at the planned age (an extra poll for ~5 % of
    fast jobs)."""
    estimate = LatencyEstimate(None)
    rng = random.Random(1)
    for _ in range(400):
        estimate.observe(rng.uniform(0.1, 0.3))
    planner = PollPlanner(estimate)
    first = planner.first_check
    assert planner.delay(0.85 * first, 1, None) >= planner.lag_target
    # After a probe (at most `PROBE_END` of the planned age) the planned first check comes.
    assert planner.delay(PROBE_END * first, 1, None) == first - PROBE_END * first


def test_once_the_start_is_fitted_the_first_wait_is_jittered_by_a_tenth_of_the_lag_target() -> None:
    planner, rng = low_end_stuck_early()
    for _ in range(100):
        age = planner.first_check * rng.uniform(PROBE_START, PROBE_END)
        planner.probed(age, rng.uniform(0.1, 0.3) <= age)
    replan(planner, planner.first_check)
    planner.probe = 0.0
    first, gap = planner.first_check, planner.lag_target
    waits = [planner.delay(0.0, 0, rng) for _ in range(2000)]
    assert min(waits) >= first - planner.jitter * gap - 1e-12
    assert min(waits) < first - 0.9 * planner.jitter * gap  # still spread
    assert max(waits) <= first


def test_twelve_scouts_check_before_a_fast_batch_would_notice_its_first_wave_late() -> None:
    """With 8 scouts, the first six checked at 0.15-0.23 s: about one 0.1-0.3 s batch in 40
    had all six of their jobs still running, learned nothing before 0.25 s and found its
    first wave (a tenth of the batch) up to 0.15 s late: its p99 lag."""
    ages = [SCOUT_FIRST * 2.0 ** (k / SCOUTS) for k in range(SCOUTS)]
    before = [age for age in ages if age < 0.25]
    assert SCOUTS >= 12 and len(before) >= 9
    all_running = 1.0
    for age in before:
        all_running *= (0.3 - age) / 0.2
    assert all_running < 0.005
