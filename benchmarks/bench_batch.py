"""Batch throughput: flux_async's ``generate_many`` against a hand-written aiohttp poll loop.

What is measured: N ShortAPI text-to-image jobs against a fake provider running in a
separate process (``python -m flux_async.testing``), run by each contender (``--repeat``
times, in alternating order; the table shows medians), each run in its own child process
so CPU time and RSS are not mixed. The fake is restarted for every run so its counters
belong to one contender. For each run:

- wall time of the batch (first create to last result);
- client CPU ms per job (``time.process_time()`` of the client process over the batch);
- client CPU microseconds per HTTP request (the per-request overhead);
- requests per job and polls per job, counted by the fake (creates + queries);
- detection lag p50/p99: from the moment the fake reports a job ready (its ``ready_at``,
  a system-wide ``time.monotonic()`` value) to the moment the client's code has the result
  in hand (``Outcome.finished_at`` for flux_async, the monotonic time right after the
  decoded status-2 answer for the loop);
- peak RSS of the client process (``VmHWM``: ``ru_maxrss`` would include the parent's
  peak, which Linux carries across ``exec``), and its RSS right after imports;
- the fake's own CPU ms per job (what the polling costs the provider).

Contenders (same jobs, same fake, same seed, same number of connections):

``loop``
    The minimal hand-written alternative: one ``aiohttp.ClientSession`` (its default
    connector: 100 connections), an ``asyncio.Semaphore`` of ``--concurrency``, and per
    job: ``POST /api/v1/job/create``, then sleep ``--interval`` (0.25 s) and
    ``GET /api/v1/job/query?id=`` until ``data.status == 2``.
``flux``
    ``FluxClient(ShortAPI(...)).generate_many(prompts, concurrency=C)`` with the policy a
    user who wants the loop's detection lag would set for this latency distribution:
    ``PollPolicy(wait_first=LOW, wait_initial=INTERVAL, wait_exp_base=1.0,
    wait_max=INTERVAL, wait_jitter=False)``: first check at the fastest typical latency
    (LOW of ``--latency LOW,HIGH``), then every INTERVAL like the loop.
    ``Limits(max_jobs_in_flight=C, max_connections=100, polls_per_second=C / INTERVAL)``:
    as many connections as the loop, and a poll-rate cap equal to the loop's own steady
    rate, so it never holds flux_async back more than the loop holds itself.
``flux-same``
    The same client polling on exactly the loop's schedule (``wait_first=INTERVAL``, then
    every INTERVAL): the same requests as the loop, so the CPU difference is the
    library's per-request overhead.
``flux-backoff``
    The same client with the policy shape of the library's defaults: first check at the
    median latency ((LOW + HIGH) / 2), then exponential backoff from 0.5 s, doubling, full
    jitter, cap 15 s. Fewer requests, later detection; shown for the trade-off.

Scenarios: ``small`` is 2,000 jobs with 200 in flight, ``large`` 10,000 with 1,000; the
fake's latency is uniform in ``--latency`` (default 2-6 s). Everything runs on 127.0.0.1;
with 2+ CPUs the fake and the client are pinned to different CPUs (``--no-pin``: not).

Run: ``python benchmarks/bench_batch.py --scenario both`` (``--smoke`` for a tiny run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fake import (  # the folder is on sys.path, not a package
    FakeProcess,
    code_under_test,
    run_child,
)

SCENARIOS = {"small": (2_000, 200), "large": (10_000, 1_000)}
CONTENDERS = ("flux", "flux-same", "flux-backoff", "loop")
MODEL = "shortapi/flux-1.0/text-to-image"
API_KEY = "bench-key"
CONNECTIONS = 100  # aiohttp's default connector limit, which the loop uses
TABLE_HEADER = (
    "| scenario | contender | wall s | CPU ms/job | CPU µs/req | req/job | polls/job "
    "| lag p50 ms | lag p99 ms | max RSS MB | fake CPU ms/job | ok |"
)


def prompts(jobs: int) -> Iterator[str]:
    """Yield the batch's prompts (the same for every contender)."""
    return (f"benchmark job {index:06d}: a red fox in the snow" for index in range(jobs))


def parse_latency(text: str) -> tuple[float, float]:
    """Parse ``LOW,HIGH`` (or one number) seconds."""
    parts = [float(part) for part in text.split(",")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 0 < parts[0] <= parts[1]:
        raise argparse.ArgumentTypeError("latency is SECONDS or LOW,HIGH with 0 < LOW <= HIGH")
    return parts[0], parts[1]


def peak_rss_kb() -> int:
    """Return the peak resident set size of this process's memory in KiB (Linux ``VmHWM``).

    Not ``ru_maxrss``: Linux carries it across ``exec``, so a child started by a parent
    with a larger RSS (``subprocess`` uses vfork) reports the parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_kb() -> int:
    """Return the process's current resident set size in KiB (Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() // 1024


# -- contenders (each runs in its own child process) -------------------------------------


async def run_flux(
    url: str,
    jobs: int,
    concurrency: int,
    latency: tuple[float, float],
    interval: float,
    *,
    shape: str,
) -> tuple[dict[str, float], int]:
    """Run the batch with flux_async; return {job id: monotonic time seen done}, failures."""
    from flux_async import FluxClient, Limits, PollPolicy, ShortAPI

    low, high = latency
    if shape == "flux-backoff":
        policy = PollPolicy(wait_first=(low + high) / 2)
    else:
        policy = PollPolicy(
            wait_first=low if shape == "flux" else interval,
            wait_initial=interval,
            wait_exp_base=1.0,
            wait_max=interval,
            wait_jitter=False,
        )
    limits = Limits(
        max_jobs_in_flight=concurrency,
        max_connections=CONNECTIONS,
        polls_per_second=concurrency / interval,
    )
    seen: dict[str, float] = {}
    failures = 0
    provider = ShortAPI(api_key=API_KEY, base_url=url)
    async with FluxClient(provider, limits=limits, poll=policy, seed=1) as client:
        async for outcome in client.generate_many(prompts(jobs), concurrency=concurrency):
            if outcome.ok and outcome.job is not None and outcome.job.id is not None:
                seen[outcome.job.id] = outcome.finished_at
            else:
                failures += 1
    return seen, failures


async def run_loop(
    url: str, jobs: int, concurrency: int, interval: float
) -> tuple[dict[str, float], int]:
    """Run the batch with a minimal hand-written create-and-poll loop."""
    import aiohttp

    seen: dict[str, float] = {}
    failures = 0
    headers = {"Authorization": f"Bearer {API_KEY}"}
    create_url = f"{url}/api/v1/job/create"
    query_url = f"{url}/api/v1/job/query"

    async def one(session: aiohttp.ClientSession, prompt: str) -> None:
        nonlocal failures
        body = {"model": MODEL, "args": {"prompt": prompt, "aspect_ratio": "1:1"}}
        async with session.post(create_url, json=body, headers=headers) as response:
            created = await response.json()
        job_id = created["data"]["job_id"]
        while True:
            await asyncio.sleep(interval)
            async with session.get(query_url, params={"id": job_id}, headers=headers) as response:
                data = (await response.json())["data"]
            if data["status"] == 2:
                seen[job_id] = time.monotonic()
                return
            if data["status"] not in (0, 1):
                failures += 1
                return

    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None]) -> None:
        nonlocal failures
        tasks.discard(task)
        slots.release()
        if task.exception() is not None:
            failures += 1

    async with aiohttp.ClientSession() as session:
        for prompt in prompts(jobs):
            await slots.acquire()
            task = asyncio.get_running_loop().create_task(one(session, prompt))
            tasks.add(task)
            task.add_done_callback(done)
        while tasks:
            await asyncio.wait(set(tasks))
    return seen, failures


def child(args: argparse.Namespace) -> int:
    """Run one contender and print one JSON line with its measurements."""
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.contender == "loop":
        import aiohttp  # noqa: F401  (imported before the RSS baseline, as flux_async is)
    else:
        import flux_async  # noqa: F401
    baseline_rss = rss_kb()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if args.contender == "loop":
        result = asyncio.run(run_loop(args.url, args.jobs, args.concurrency, args.interval))
    else:
        result = asyncio.run(
            run_flux(
                args.url,
                args.jobs,
                args.concurrency,
                args.latency,
                args.interval,
                shape=args.contender,
            )
        )
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seen, failures = result
    print(
        json.dumps(
            {
                "contender": args.contender,
                "wall_s": wall,
                "cpu_s": cpu,
                "sys_s": usage.ru_stime - usage0.ru_stime,
                "context_switches": (usage.ru_nvcsw - usage0.ru_nvcsw)
                + (usage.ru_nivcsw - usage0.ru_nivcsw),
                "max_rss_kb": peak_rss_kb(),
                "baseline_rss_kb": baseline_rss,
                "failures": failures,
                "seen": seen,
            }
        )
    )
    return 0


# -- orchestration --------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of sorted ``values`` (``nan`` when empty)."""
    if not values:
        return float("nan")
    rank = max(0, min(len(values) - 1, round(fraction * len(values)) - 1))
    return values[rank]


def pinned_cpus(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """Return the CPUs for the fake and the client, or Nones when not pinning."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if args.no_pin or len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def run_contender(
    contender: str, jobs: int, concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Start a fresh fake, run one contender in a child process, and collect its numbers."""
    low, high = args.latency
    # Bound every run: the batch's ideal duration, many times over, plus start-up.
    time_limit = 120 + 10 * (jobs / concurrency) * (high + args.interval)
    fake_cpu, client_cpu = pinned_cpus(args)
    with FakeProcess(latency=f"{low},{high}", seed=args.seed, cpu=fake_cpu) as fake:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--contender",
            contender,
            "--url",
            fake.url,
            "--jobs",
            str(jobs),
            "--concurrency",
            str(concurrency),
            "--latency",
            f"{low},{high}",
            "--interval",
            str(args.interval),
        ]
        result = run_child(contender, command, cpu=client_cpu, time_limit=time_limit)
        fake_cpu = fake.cpu_since_start()
        stats = fake.stats(detail=True)
    requests = stats["requests"]
    creates = requests.get("shortapi.create", 0)
    polls = requests.get("shortapi.query", 0)
    lags = sorted(
        seen_at - stats["jobs"][job_id]["ready_at"]
        for job_id, seen_at in result["seen"].items()
        if stats["jobs"].get(job_id, {}).get("ready_at") is not None
    )
    ok = len(result["seen"])
    return {
        "contender": contender,
        "jobs": jobs,
        "concurrency": concurrency,
        "ok": ok,
        "failures": result["failures"],
        "jobs_created": stats["jobs_created"],
        "wall_s": result["wall_s"],
        "cpu_ms_per_job": 1000 * result["cpu_s"] / jobs,
        "sys_ms_per_job": 1000 * result["sys_s"] / jobs,
        "context_switches_per_job": result["context_switches"] / jobs,
        "cpu_us_per_request": 1e6 * result["cpu_s"] / max(1, creates + polls),
        "requests_per_job": (creates + polls) / jobs,
        "polls_per_job": polls / jobs,
        "lag_p50_ms": 1000 * percentile(lags, 0.50),
        "lag_p99_ms": 1000 * percentile(lags, 0.99),
        "lag_max_ms": 1000 * (lags[-1] if lags else float("nan")),
        "max_rss_mb": result["max_rss_kb"] / 1024,
        "baseline_rss_mb": result["baseline_rss_kb"] / 1024,
        "fake_cpu_ms_per_job": 1000 * fake_cpu / jobs,
    }


def table_row(name: str, row: dict[str, Any]) -> str:
    """Format one result as a Markdown table row."""
    return (
        f"| {name} | {row['contender']} | {row['wall_s']:.1f} "
        f"| {row['cpu_ms_per_job']:.2f} ({row['sys_ms_per_job']:.2f}) "
        f"| {row['cpu_us_per_request']:.0f} | {row['requests_per_job']:.2f} "
        f"| {row['polls_per_job']:.2f} | {row['lag_p50_ms']:.0f} | {row['lag_p99_ms']:.0f} "
        f"| {row['max_rss_mb']:.1f} ({row['baseline_rss_mb']:.1f}) "
        f"| {row['fake_cpu_ms_per_job']:.2f} | {row['ok']}/{row['jobs']} |"
    )


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine repeated runs of one contender: the median of every number."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            row[key] = statistics.median(run[key] for run in runs)
    row["ok"] = min(run["ok"] for run in runs)
    row["jobs_created"] = max(run["jobs_created"] for run in runs)
    row["cpu_runs"] = [run["cpu_ms_per_job"] for run in runs]
    return row


def orchestrate(args: argparse.Namespace) -> int:
    """Run the scenarios, print the comparison table, and exit non-zero on lost jobs."""
    if args.smoke:
        scenarios = {"smoke": (50, 10)}
    elif args.jobs is not None or args.concurrency is not None:
        scenarios = {"custom": (args.jobs or 2_000, args.concurrency or 200)}
    elif args.scenario == "both":
        scenarios = dict(SCENARIOS)
    else:
        scenarios = {args.scenario: SCENARIOS[args.scenario]}
    contenders = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = set(contenders) - set(CONTENDERS)
    if unknown or not contenders:
        print(f"unknown contenders {sorted(unknown)}; choose from {CONTENDERS}", file=sys.stderr)
        return 2
    low, high = args.latency
    fake_cpu, client_cpu = pinned_cpus(args)
    pinning = (
        f"fake pinned to CPU {fake_cpu}, client to CPU {client_cpu}"
        if fake_cpu is not None
        else "not pinned"
    )
    print(
        f"bench_batch ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {pinning}): fake "
        f"latency uniform {low:g}-{high:g} s, loop interval {args.interval:g} s, "
        f"{CONNECTIONS} connections, seed {args.seed}, median of {args.repeat} run(s); "
        f"{code_under_test()}",
        flush=True,
    )
    rows: list[tuple[str, dict[str, Any]]] = []
    for name, (jobs, concurrency) in scenarios.items():
        runs: dict[str, list[dict[str, Any]]] = {contender: [] for contender in contenders}
        for repeat in range(args.repeat):
            # Alternate the order, so no contender always runs first (or last).
            for contender in contenders if repeat % 2 == 0 else contenders[::-1]:
                print(
                    f"  {name} run {repeat + 1}/{args.repeat}: {contender}, {jobs} jobs, "
                    f"{concurrency} in flight ...",
                    file=sys.stderr,
                    flush=True,
                )
                runs[contender].append(run_contender(contender, jobs, concurrency, args))
        rows.extend((name, median_row(runs[contender])) for contender in contenders)
    print()
    print(TABLE_HEADER)
    print("|" + "---|" * (TABLE_HEADER.count("|") - 1))
    for name, row in rows:
        print(table_row(name, row))
    print(
        "\nCPU ms/job: user + system time of the client process over the batch (in brackets:"
        " the system part).\nmax RSS: peak of the client process (in brackets: its RSS after"
        " imports). ok: jobs whose result the client saw / jobs.\n"
    )
    by_scenario: dict[str, dict[str, dict[str, Any]]] = {}
    for name, row in rows:
        by_scenario.setdefault(name, {})[row["contender"]] = row
    status = 0
    for name, by_contender in by_scenario.items():
        loop = by_contender.get("loop")
        for contender, row in by_contender.items():
            runs_text = ", ".join(f"{cpu:.2f}" for cpu in row["cpu_runs"])
            print(f"{name} {contender}: CPU ms/job per run: {runs_text}")
            if row["ok"] != row["jobs"] or row["jobs_created"] != row["jobs"]:
                print(
                    f"{name} {contender}: only {row['ok']} of {row['jobs']} jobs succeeded "
                    f"({row['jobs_created']} created)"
                )
                status = 1
            if loop is None or contender == "loop":
                continue
            print(
                f"{name} {contender}/loop: CPU per job "
                f"{row['cpu_ms_per_job'] / loop['cpu_ms_per_job']:.2f}x (target <= 1.25x), "
                f"requests per job {row['requests_per_job'] / loop['requests_per_job']:.2f}x, "
                f"lag p99 {row['lag_p99_ms'] - loop['lag_p99_ms']:+.0f} ms"
            )
    if args.json:
        Path(args.json).write_text(json.dumps([row for _, row in rows], indent=2))
    return status


def main(argv: list[str] | None = None) -> int:
    """Parse the command line; orchestrate, or run one contender when ``--contender``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "both"), default="both")
    parser.add_argument("--jobs", type=int, default=None, help="custom number of jobs")
    parser.add_argument("--concurrency", type=int, default=None, help="custom jobs in flight")
    parser.add_argument(
        "--latency",
        type=parse_latency,
        default=(2.0, 6.0),
        metavar="LOW,HIGH",
        help="fake create-to-ready seconds (default 2,6)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.25,
        help="the loop's poll interval and flux's steady poll wait (0.25)",
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, from {', '.join(CONTENDERS)}",
    )
    parser.add_argument("--seed", type=int, default=0, help="the fake's seed")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per contender, in alternating order; the table shows medians",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="50 jobs, 10 in flight, latency 0.05-0.2 s, interval 0.05 s",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the fake and the client to separate CPUs"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contender is not None:
        return child(args)
    if args.smoke:
        args.latency, args.interval = (0.05, 0.2), 0.05
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
