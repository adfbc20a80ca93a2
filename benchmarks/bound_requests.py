"""The fewest requests per job any poll schedule can make at the hand-written loop's p99 lag.

Issue 12 asks the library's default schedule for two things at once on each latency
distribution of `bench_batch.py`: a p99 detection lag no worse than the loop's and at least
25 % fewer requests per job. This script computes, offline, how far those two can go
together: knowing the **true** distribution (which no client does), what is the smallest
number of requests per job (the create plus the polls) of a schedule whose p99 lag is at
most the loop's? If that bound is above 0.75x the loop's, the target cannot be met on that
distribution by any schedule, learned or hand-tuned.

Why a fixed list of poll times is enough: a poll only tells "still running" or "ready", so
for one job every schedule (adaptive or not) is a list of ages t1 < t2 < ... at which it
polls while the job runs. The job's requests are 1 + (the number of ti before its ready
time, plus one), its lag is the first ti at or after its ready time minus that time.
Minimising the expected requests subject to "at most 1 % of jobs have a lag above L" is
solved by a Lagrangian dynamic programme over a time grid of step L / 10 (a finer grid can
only lower the bound slightly), with the multiplier found by bisection and every candidate
schedule checked against the sampled jobs themselves.

Also printed, for the same sampled jobs: the loop (a poll every INTERVAL from the create)
and the library's `PollPlanner`, warm (an estimate already fitted to the distribution,
jobs one at a time: `simulate_polling`) and in a batch (its real start: the provider's
typical 8 s as prior, 200 jobs in flight, learning only from jobs that ended:
`simulate_batch`). Simulated time, requests take no time: these are the schedules' own
numbers, without the network and event-loop delays `bench_batch.py` measures.

Run: ``python benchmarks/bound_requests.py`` (about a minute; ``--dist`` picks some).
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import sys
from collections.abc import Callable

Draw = Callable[[random.Random, int], list[float]]


def _uniform(low: float, high: float) -> Draw:
    return lambda rng, n: [rng.uniform(low, high) for _ in range(n)]


def _lognormal(median: float, sigma: float) -> Draw:
    return lambda rng, n: [rng.lognormvariate(math.log(median), sigma) for _ in range(n)]


def _slowdown(rng: random.Random, n: int) -> list[float]:
    half = n // 2
    return _uniform(0.1, 0.3)(rng, half) + _uniform(4.0, 12.0)(rng, n - half)


# name: (jobs' create-to-ready seconds, the loop's interval), as in bench_batch.py
DISTRIBUTIONS: dict[str, tuple[Draw, float]] = {
    "uniform": (_uniform(2.0, 6.0), 0.25),
    "fast": (_uniform(0.1, 0.3), 0.1),
    "flux": (_uniform(4.0, 12.0), 1.0),
    "longtail": (_lognormal(8.0, 0.6), 1.0),
    "slowdown": (_slowdown, 0.25),
}
QUANTILE = 0.99


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values`` (as bench_batch reports lags)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def evaluate(times: list[float], latencies: list[float]) -> tuple[float, float]:
    """Requests per job (create included) and p99 lag of polling at ``times``."""
    requests = 0
    lags = []
    for latency in latencies:
        index = bisect.bisect_left(times, latency)
        if index == len(times):  # past the schedule's end: polled at the end, then every step
            step = times[-1] - times[-2] if len(times) > 1 else times[-1]
            extra = math.ceil((latency - times[-1]) / step)
            index, at = len(times) - 1 + extra, times[-1] + extra * step
        else:
            at = times[index]
        requests += index + 2  # the create, then polls 0..index
        lags.append(at - latency)
    return requests / len(latencies), percentile(lags, QUANTILE)


def optimal_schedule(latencies: list[float], lag: float, penalty: float) -> list[float]:
    """The poll times minimising E[polls] + penalty * P(lag > ``lag``) on the sample."""
    ordered = sorted(latencies)
    count = len(ordered)
    step = lag / 10
    end = ordered[-1] + step
    points = int(end / step) + 2
    grid = [i * step for i in range(points)]

    def cdf(seconds: float) -> float:
        return bisect.bisect_right(ordered, seconds) / count

    below = [cdf(t) for t in grid]  # P(T <= t)
    late_cdf = [cdf(t - lag) for t in grid]  # P(T <= t - lag)
    # value[i]: expected cost from a poll at grid[i] (unconditional), best[i]: next poll.
    value = [0.0] * points
    best = [points] * points
    for i in range(points - 1, -1, -1):
        surviving = 1.0 - below[i]
        if surviving <= 0.0:
            continue
        choice, lowest = points, math.inf
        for j in range(i + 1, points):
            missed = late_cdf[j] - below[i]
            cost = value[j] + (penalty * missed if missed > 0.0 else 0.0)
            if cost < lowest:
                choice, lowest = j, cost
        value[i] = surviving + lowest
        best[i] = choice
    # The first poll: from the create (age 0), like any other step.
    choice, lowest = points, math.inf
    for j in range(1, points):
        missed = late_cdf[j]
        cost = value[j] + (penalty * missed if missed > 0.0 else 0.0)
        if cost < lowest:
            choice, lowest = j, cost
    times = []
    while choice < points:
        times.append(grid[choice])
        choice = best[choice]
    return times


def bound(latencies: list[float], lag: float) -> tuple[float, float, list[float]]:
    """The fewest requests per job at a p99 lag <= ``lag``: (requests, p99 lag, schedule)."""
    low, high = 0.0, 1e6  # the multiplier: 0 polls once at the end, 1e6 never misses
    found = optimal_schedule(latencies, lag, high)
    result = evaluate(found, latencies)
    for _ in range(40):
        middle = math.sqrt(max(low, 1e-3) * high)
        times = optimal_schedule(latencies, lag, middle)
        requests, p99 = evaluate(times, latencies)
        if p99 <= lag + 1e-9:
            high, found, result = middle, times, (requests, p99)
        else:
            low = middle
        if high / max(low, 1e-3) < 1.02:
            break
    return result[0], result[1], found


def planner_numbers(latencies: list[float], batch: bool) -> tuple[float, float]:
    """The library's planner on these jobs: requests per job (create included), p99 lag."""
    from flux_async._latency import LatencyEstimate
    from flux_async._planner import PollPlanner, simulate_batch, simulate_polling

    if batch:
        planner = PollPlanner(LatencyEstimate(8.0))
        result = simulate_batch(planner, latencies, 200, random.Random(1))
    else:
        estimate = LatencyEstimate(None)
        for latency in latencies:
            estimate.observe(latency)
        planner = PollPlanner(estimate)
        result = simulate_polling(planner, latencies, random.Random(1), learn=False)
    return 1.0 + result.polls_per_job, result.lag_p99


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--dist", default="all", help=f"comma-separated from {', '.join(DISTRIBUTIONS)} or all"
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="sampled jobs (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = list(DISTRIBUTIONS) if args.dist == "all" else args.dist.split(",")
    unknown = [name for name in names if name not in DISTRIBUTIONS]
    if unknown:
        print(f"unknown --dist {unknown}; choose from {', '.join(DISTRIBUTIONS)}", file=sys.stderr)
        return 2
    header = (
        "| dist | loop req/job | loop p99 lag s | bound req/job | bound/loop | bound p99 s "
        "| planner warm req/job (x loop), p99 s | planner in a batch req/job (x loop), p99 s |"
    )
    print(header)
    print("|---" * 8 + "|")
    schedules = []
    for name in names:
        draw, interval = DISTRIBUTIONS[name]
        latencies = draw(random.Random(args.seed), args.jobs)
        loop_requests, loop_lag = evaluate([interval * k for k in range(1, 10_000)], latencies)
        requests, lag, times = bound(latencies, loop_lag)
        warm = planner_numbers(latencies, batch=False)
        batch_jobs = draw(random.Random(args.seed), 2_000)
        in_batch = planner_numbers(batch_jobs, batch=True)
        loop_batch, _ = evaluate([interval * k for k in range(1, 10_000)], batch_jobs)
        print(
            f"| {name} | {loop_requests:.2f} | {loop_lag:.3f} | {requests:.2f} "
            f"| {requests / loop_requests:.2f}x | {lag:.3f} "
            f"| {warm[0]:.2f} ({warm[0] / loop_requests:.2f}x), {warm[1]:.3f} "
            f"| {in_batch[0]:.2f} ({in_batch[0] / loop_batch:.2f}x), {in_batch[1]:.3f} |",
            flush=True,
        )
        first = ", ".join(f"{t:.2f}" for t in times[:8])
        schedules.append(f"{name}: the bound's schedule polls at ages {first}, ... s")
    print()
    print("\n".join(schedules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
