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
- 429s: requests the fake answered 429 (its ``rejected_429`` counter; ``-`` when the fake
  does not count them);
- peak RSS of the client process (``VmHWM``: ``ru_maxrss`` would include the parent's
  peak, which Linux carries across ``exec``), and its RSS right after imports;
- the fake's own CPU ms per job (what the polling costs the provider).

Contenders (same jobs, same fake, same seed, same number of connections):

``loop``
    The yardstick: the minimal hand-written alternative (``_harness.poll_loop``): one
    ``aiohttp.ClientSession`` (its default connector: 100 connections), an
    ``asyncio.Semaphore`` of ``--concurrency``, and per job: ``POST /api/v1/job/create``,
    then sleep ``--interval`` and ``GET /api/v1/job/query?id=`` until ``data.status == 2``;
    a 429 is retried after its ``Retry-After``.
``defaults``
    ``FluxClient(ShortAPI(...)).generate_many(prompts, concurrency=C)`` and nothing else:
    the library's default poll schedule and limits, what a user who changes no setting gets.
``flux``
    The same client with the policy a user who wants the loop's detection lag would set
    for this latency distribution: ``PollPolicy(wait_first=LOW, wait_initial=INTERVAL,
    wait_exp_base=1.0, wait_max=INTERVAL, wait_jitter=False)``: first check at the fastest
    typical latency (LOW: the distribution's low end), then every INTERVAL like the loop;
    ``Limits(max_jobs_in_flight=C, max_connections=100, polls_per_second=C / INTERVAL)``:
    as many connections as the loop, and a poll-rate cap equal to the loop's own steady rate.
``flux-same``
    The same client polling on exactly the loop's schedule (``wait_first=INTERVAL``, then
    every INTERVAL): the same requests as the loop, so the CPU difference is the
    library's per-request overhead.
``flux-backoff``
    The policy shape of the library's defaults, tuned to the distribution: first check at
    its median, then exponential backoff from 0.5 s, doubling, full jitter, cap 15 s.

Any flux contender may carry ``+journal`` (e.g. ``flux+journal``): the same run with
``generate_many(..., journal=PATH)`` (the SQLite journal of issue 11), for the journal-on
vs journal-off comparison; ``--journal`` adds that twin for every flux contender chosen.

Latency distributions (``--dist``, several comma-separated, or ``all``), the fake's
options in brackets:

- ``uniform``: ``--latency LOW,HIGH`` (default 2-6 s), loop interval 0.25 s;
- ``fast``: 200 ms +- 100 (uniform 0.1-0.3 s), loop interval 0.1 s;
- ``flux``: FLUX-like, 8 s +- 4 (uniform 4-12 s), loop interval 1 s;
- ``longtail``: lognormal, median 8 s, sigma 0.6 (p5 3 s, p99 32 s), loop interval 1 s;
- ``slowdown``: 0.1-0.3 s for the first half of the batch's jobs, then 4-12 s
  (``--latency-after N=uniform:4,12``), loop interval 0.25 s;
- ``ratelimit``: ``fast`` behind a hidden limit of ``--rate-limit`` requests per second
  per API key (default 200), answered 429 with ``Retry-After`` beyond it; loop interval
  0.1 s. Also printed: requests/s against the limit and the share answered 429.

``--interval`` overrides the loop's interval. A fake that cannot produce a distribution
(an older checkout) is refused with a message naming the option it lacks.

Scenarios: ``small`` is 2,000 jobs with 200 in flight, ``large`` 10,000 with 1,000.
Everything runs on 127.0.0.1; with 2+ CPUs the fake and the client are pinned to different
CPUs (``--no-pin``: not). ``--code DIR`` measures the flux_async in DIR (another revision).

Run: ``python benchmarks/bench_batch.py --scenario both`` (``--smoke`` for a tiny run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # the folder is on sys.path, not a package
    API_KEY,
    CONNECTIONS,
    SCENARIOS,
    FakeProcess,
    Seen,
    add_code_argument,
    code_under_test,
    detection_lags,
    fake_supports,
    measure_child,
    median_row,
    parse_latency,
    percentile,
    pinned_cpus,
    poll_loop,
    print_table,
    prompts,
    run_child,
)

FLUX_CONTENDERS = ("defaults", "flux", "flux-same", "flux-backoff")
CONTENDERS = (*FLUX_CONTENDERS, "loop")
SMOKE_CONTENDERS = ("flux", "loop")  # the defaults' first poll comes after seconds
JOURNAL = "+journal"
SCHEDULES = {
    "loop": "the loop's: every INTERVAL from the create",
    "defaults": "the library's defaults (no PollPolicy, no Limits)",
    "flux": "first check at LOW, then every INTERVAL (not the loop's: skips early polls)",
    "flux-same": "the loop's exact schedule",
    "flux-backoff": "first check at the median, then 0.5 s doubling, full jitter, cap 15 s",
}
TABLE_HEADER = (
    "scenario",
    "contender",
    "wall s",
    "CPU ms/job",
    "CPU µs/req",
    "req/job",
    "polls/job",
    "lag p50 ms",
    "lag p99 ms",
    "429s",
    "max RSS MB",
    "fake CPU ms/job",
    "ok",
)


@dataclass(frozen=True)
class Distribution:
    """A latency distribution of the fake, and how the contenders are tuned to it."""

    description: str
    fake_args: Callable[[int], tuple[str, ...]]  # the fake's options, given the batch size
    low: float  # a low quantile (``flux`` checks first here)
    median: float  # (``flux-backoff`` checks first here)
    high: float  # a high quantile (bounds the run's time limit)
    interval: float  # the loop's default poll interval
    needs: str | None = None  # what the fake's --help must mention; None: any fake
    rate_limit: float | None = None  # the hidden limit (requests per second), if any


def distributions(latency: tuple[float, float], rate_limit: float) -> dict[str, Distribution]:
    """Return the distributions by name; ``uniform`` takes ``--latency LOW,HIGH``."""
    low, high = latency
    fast = ("--latency", "0.1,0.3")
    return {
        "uniform": Distribution(
            f"uniform {low:g}-{high:g} s",
            lambda jobs: ("--latency", f"{low},{high}"),
            low,
            (low + high) / 2,
            high,
            0.25,
        ),
        "fast": Distribution(
            "200 ms +- 100 (uniform 0.1-0.3 s)", lambda jobs: fast, 0.1, 0.2, 0.3, 0.1
        ),
        "flux": Distribution(
            "8 s +- 4 (uniform 4-12 s)",
            lambda jobs: ("--latency", "4,12"),
            4.0,
            8.0,
            12.0,
            1.0,
        ),
        "longtail": Distribution(
            "lognormal, median 8 s, sigma 0.6 (p5 3 s, p99 32 s)",
            lambda jobs: ("--latency", "lognormal:8,0.6"),
            3.0,
            8.0,
            32.0,
            1.0,
            needs="lognormal:",
        ),
        "slowdown": Distribution(
            "0.1-0.3 s for the first half of the jobs, then 4-12 s (the provider slows down)",
            lambda jobs: (*fast, "--latency-after", f"{jobs // 2}=uniform:4,12"),
            0.1,
            4.0,
            12.0,
            0.25,
            needs="--latency-after",
        ),
        "ratelimit": Distribution(
            f"200 ms +- 100 behind a hidden limit of {rate_limit:g} requests/s per key "
            "(429 with Retry-After beyond it)",
            lambda jobs: (*fast, "--rate-limit", f"{rate_limit:g}"),
            0.1,
            0.2,
            0.3,
            0.1,
            needs="--rate-limit",
            rate_limit=rate_limit,
        ),
    }


# -- contenders (each runs in its own child process) -------------------------------------


async def run_flux(
    url: str,
    jobs: int,
    concurrency: int,
    dist: Distribution,
    interval: float,
    *,
    shape: str,
    journal: str | None,
) -> tuple[Seen, int, dict[str, Any]]:
    """Run the batch with flux_async; return {job id: monotonic time seen done}, failures."""
    from flux_async import FluxClient, Limits, PollPolicy, ShortAPI

    options: dict[str, Any] = {}
    if shape == "flux-backoff":
        options["poll"] = PollPolicy(wait_first=dist.median)
    elif shape in ("flux", "flux-same"):
        options["poll"] = PollPolicy(
            wait_first=dist.low if shape == "flux" else interval,
            wait_initial=interval,
            wait_exp_base=1.0,
            wait_max=interval,
            wait_jitter=False,
        )
    if shape != "defaults":
        options["seed"] = 1
        options["limits"] = Limits(
            max_jobs_in_flight=concurrency,
            max_connections=CONNECTIONS,
            polls_per_second=concurrency / interval,
        )
    batch_options: dict[str, Any] = {"concurrency": concurrency}
    if journal is not None:
        batch_options["journal"] = journal
    seen: Seen = {}
    failures = 0
    provider = ShortAPI(api_key=API_KEY, base_url=url)
    async with FluxClient(provider, **options) as client:
        async for outcome in client.generate_many(prompts(jobs), **batch_options):
            if outcome.ok and outcome.job is not None and outcome.job.id is not None:
                seen[outcome.job.id] = outcome.finished_at
            else:
                failures += 1
    return seen, failures, {}


def child(args: argparse.Namespace) -> int:
    """Run one contender and print one JSON line with its measurements."""
    dist = distributions(args.latency, args.rate_limit)[args.dist]
    shape = args.contender.removesuffix(JOURNAL)
    if shape == "loop":
        return measure_child(
            cpu=args.cpu,
            uses_flux=False,
            run=lambda: poll_loop(args.url, args.jobs, args.concurrency, args.interval),
        )
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-journal-") as folder:
        journal = str(Path(folder) / "batch.sqlite") if args.contender.endswith(JOURNAL) else None
        return measure_child(
            cpu=args.cpu,
            uses_flux=True,
            run=lambda: run_flux(
                args.url,
                args.jobs,
                args.concurrency,
                dist,
                args.interval,
                shape=shape,
                journal=journal,
            ),
        )


# -- orchestration --------------------------------------------------------------------------


def journal_support(code: str | None) -> str | None:
    """Return why ``generate_many(journal=...)`` cannot be measured, or None when it can."""
    import subprocess

    from _harness import HERE, child_env

    probe = (
        "import inspect, flux_async; "
        "print('journal' in inspect.signature(flux_async.FluxClient.generate_many).parameters)"
    )
    finished = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=child_env(code),
        cwd=HERE,
        timeout=60,
        check=False,
    )
    if finished.stdout.strip() == "True":
        return None
    return (
        "this flux_async has no FluxClient.generate_many(..., journal=PATH) (issue 11's "
        "SQLite journal), so the +journal rows cannot run"
    )


def run_contender(
    contender: str,
    jobs: int,
    concurrency: int,
    dist_name: str,
    dist: Distribution,
    interval: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Start a fresh fake, run one contender in a child process, and collect its numbers."""
    # Bound every run: the batch's ideal duration, many times over, plus start-up.
    time_limit = 120 + 10 * (jobs / concurrency) * (dist.high + interval + 8)
    fake_cpu, client_cpu = pinned_cpus(args.no_pin)
    with FakeProcess(*dist.fake_args(jobs), seed=args.seed, cpu=fake_cpu) as fake:
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
            "--dist",
            dist_name,
            "--latency",
            ",".join(str(value) for value in args.latency),
            "--interval",
            str(interval),
            "--rate-limit",
            str(args.rate_limit),
        ]
        result = run_child(
            contender,
            command,
            cpu=client_cpu,
            time_limit=time_limit,
            code=None if contender == "loop" else args.code,
        )
        fake_cpu_s = fake.cpu_since_start()
        stats = fake.stats(detail=True)
    requests = stats["requests"]
    creates = requests.get("shortapi.create", 0)
    polls = requests.get("shortapi.query", 0)
    lags = detection_lags(result["seen"], stats)
    rejected = stats.get("rejected_429")
    return {
        "contender": contender,
        "jobs": jobs,
        "concurrency": concurrency,
        "ok": len(result["seen"]),
        "failures": result["failures"],
        "jobs_created": stats["jobs_created"],
        "wall_s": result["wall_s"],
        "jobs_per_s": jobs / result["wall_s"],
        "requests_per_s": (creates + polls) / result["wall_s"],
        "cpu_ms_per_job": 1000 * result["cpu_s"] / jobs,
        "sys_ms_per_job": 1000 * result["sys_s"] / jobs,
        "context_switches_per_job": result["context_switches"] / jobs,
        "cpu_us_per_request": 1e6 * result["cpu_s"] / max(1, creates + polls),
        "requests_per_job": (creates + polls) / jobs,
        "polls_per_job": polls / jobs,
        "rejected_429": float(rejected) if rejected is not None else None,
        "lag_p50_ms": 1000 * percentile(lags, 0.50),
        "lag_p99_ms": 1000 * percentile(lags, 0.99),
        "lag_max_ms": 1000 * (lags[-1] if lags else float("nan")),
        "max_rss_mb": result["max_rss_kb"] / 1024,
        "baseline_rss_mb": result["baseline_rss_kb"] / 1024,
        "fake_cpu_ms_per_job": 1000 * fake_cpu_s / jobs,
    }


def table_row(name: str, row: dict[str, Any]) -> list[str]:
    """Format one result as the cells of a Markdown table row."""
    rejected = row["rejected_429"]
    return [
        name,
        row["contender"],
        f"{row['wall_s']:.1f}",
        f"{row['cpu_ms_per_job']:.2f} ({row['sys_ms_per_job']:.2f})",
        f"{row['cpu_us_per_request']:.0f}",
        f"{row['requests_per_job']:.2f}",
        f"{row['polls_per_job']:.2f}",
        f"{row['lag_p50_ms']:.0f}",
        f"{row['lag_p99_ms']:.0f}",
        "-" if rejected is None else f"{rejected:.0f}",
        f"{row['max_rss_mb']:.1f} ({row['baseline_rss_mb']:.1f})",
        f"{row['fake_cpu_ms_per_job']:.2f}",
        f"{row['ok']}/{row['jobs']}",
    ]


def choose_contenders(args: argparse.Namespace) -> list[str]:
    """Return the contenders to run, or raise ValueError naming unknown ones."""
    if args.contenders is None:
        contenders = list(SMOKE_CONTENDERS if args.smoke else CONTENDERS)
    else:
        contenders = [name.strip() for name in args.contenders.split(",") if name.strip()]
    if args.journal:
        twins = [f"{name}{JOURNAL}" for name in contenders if name in FLUX_CONTENDERS]
        if not twins:
            contenders.insert(0, "flux")
            twins = [f"flux{JOURNAL}"]
        contenders += [twin for twin in twins if twin not in contenders]
    known = {*CONTENDERS, *(f"{name}{JOURNAL}" for name in FLUX_CONTENDERS)}
    unknown = set(contenders) - known
    if unknown or not contenders:
        raise ValueError(
            f"unknown contenders {sorted(unknown)}; choose from {', '.join(CONTENDERS)} "
            f"(flux ones may end in {JOURNAL})"
        )
    return contenders


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
    try:
        contenders = choose_contenders(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    table = distributions(args.latency, args.rate_limit)
    dist_names = [name.strip() for name in args.dist.split(",") if name.strip()]
    if dist_names == ["all"]:
        dist_names = list(table)
    for dist_name in dist_names:
        if dist_name not in table:
            print(f"unknown --dist {dist_name!r}; choose from {', '.join(table)}", file=sys.stderr)
            return 2
        needs = table[dist_name].needs
        if needs is not None and not fake_supports(needs):
            print(
                f"--dist {dist_name}: the fake provider cannot produce it yet "
                f"(`python -m flux_async.testing --help` does not mention {needs!r})",
                file=sys.stderr,
            )
            return 2
    if any(name.endswith(JOURNAL) for name in contenders):
        problem = journal_support(args.code)
        if problem is not None:
            print(f"--journal: {problem}", file=sys.stderr)
            return 2
    fake_cpu, client_cpu = pinned_cpus(args.no_pin)
    pinning = (
        f"fake pinned to CPU {fake_cpu}, client to CPU {client_cpu}"
        if fake_cpu is not None
        else "not pinned"
    )
    print(
        f"bench_batch ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {pinning}): "
        f"{CONNECTIONS} connections, seed {args.seed}, median of {args.repeat} run(s); "
        f"{code_under_test(args.code)}",
        flush=True,
    )
    rows: list[tuple[str, dict[str, Any]]] = []
    for dist_name in dist_names:
        dist = table[dist_name]
        interval = args.interval if args.interval is not None else dist.interval
        print(
            f"--dist {dist_name}: fake latency {dist.description}, loop interval {interval:g} s",
            flush=True,
        )
        for scenario, (jobs, concurrency) in scenarios.items():
            name = scenario if dist_name == "uniform" else f"{scenario}/{dist_name}"
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
                    runs[contender].append(
                        run_contender(
                            contender, jobs, concurrency, dist_name, dist, interval, args
                        )
                    )
            for contender in contenders:
                row = median_row(runs[contender])
                row["jobs_created"] = max(run["jobs_created"] for run in runs[contender])
                row["dist"], row["interval"] = dist_name, interval
                rows.append((name, row))
    print()
    print_table(TABLE_HEADER, [table_row(name, row) for name, row in rows])
    print(
        "\nCPU ms/job: user + system time of the client process over the batch (in brackets:"
        " the system part).\nmax RSS: peak of the client process (in brackets: its RSS after"
        " imports). ok: jobs whose result the client saw / jobs.\n429s: requests the fake "
        "answered 429 (-: this fake does not count them).\nSchedules (rows other than the "
        "loop's are marked):"
    )
    for contender in contenders:
        schedule = SCHEDULES[contender.removesuffix(JOURNAL)]
        extra = ", with the SQLite journal" if contender.endswith(JOURNAL) else ""
        print(f"  {contender}: {schedule}{extra}")
    print()
    return report(rows, table, args)


def report(
    rows: list[tuple[str, dict[str, Any]]],
    table: dict[str, Distribution],
    args: argparse.Namespace,
) -> int:
    """Print the ratios to the loop and the targets; return 1 when jobs were lost."""
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
            limit = table[row["dist"]].rate_limit
            if limit is not None:
                share = (row["rejected_429"] or 0.0) / max(
                    1.0, row["requests_per_job"] * row["jobs"]
                )
                print(
                    f"{name} {contender}: {row['requests_per_s']:.0f} requests/s against a "
                    f"hidden limit of {limit:g}/s ({row['requests_per_s'] / limit:.2f}x), "
                    f"{row['jobs_per_s']:.1f} jobs/s, {100 * share:.1f}% of requests "
                    "answered 429 (target: within 15% of the limit, < 2% 429s)"
                )
            if loop is None or contender == "loop":
                continue
            target = " (target <= 1.0x)" if contender == "defaults" else ""
            print(
                f"{name} {contender}/loop: CPU per job "
                f"{row['cpu_ms_per_job'] / loop['cpu_ms_per_job']:.2f}x{target}, "
                f"requests per job {row['requests_per_job'] / loop['requests_per_job']:.2f}x"
                f"{' (target <= 0.75x)' if contender == 'defaults' else ''}, "
                f"lag p99 {row['lag_p99_ms'] - loop['lag_p99_ms']:+.0f} ms"
                f"{' (target <= 0)' if contender == 'defaults' else ''}"
            )
        for contender, row in by_contender.items():
            plain = by_contender.get(contender.removesuffix(JOURNAL))
            if not contender.endswith(JOURNAL) or plain is None:
                continue
            print(
                f"{name} {contender} vs {plain['contender']}: CPU per job "
                f"{row['cpu_ms_per_job'] / plain['cpu_ms_per_job']:.2f}x, wall "
                f"{row['wall_s'] / plain['wall_s']:.2f}x (target: within 10%)"
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
        "--dist",
        default="uniform",
        help="latency distributions, comma-separated: uniform (--latency), fast, flux, "
        "longtail, slowdown, ratelimit (--rate-limit), or all (default uniform)",
    )
    parser.add_argument(
        "--latency",
        type=parse_latency,
        default=(2.0, 6.0),
        metavar="LOW,HIGH",
        help="--dist uniform's create-to-ready seconds (default 2,6)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=200.0,
        metavar="N",
        help="--dist ratelimit's hidden limit, requests per second (default 200; smoke 50)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="the loop's poll interval and flux's steady poll wait (default: the "
        "distribution's: uniform 0.25, fast and ratelimit 0.1, slowdown 0.25, flux and "
        "longtail 1)",
    )
    parser.add_argument(
        "--contenders",
        default=None,
        help=f"comma-separated, from {', '.join(CONTENDERS)}; flux ones may end in "
        f"{JOURNAL} (default: all; with --smoke: {','.join(SMOKE_CONTENDERS)})",
    )
    parser.add_argument(
        "--journal",
        action="store_true",
        help=f"add a {JOURNAL} twin of every flux contender: generate_many(journal=PATH)",
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
    add_code_argument(parser)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contender is not None:
        return child(args)
    if args.smoke:
        args.latency = (0.05, 0.2)
        if args.rate_limit == parser.get_default("rate_limit"):
            args.rate_limit = 50.0
        if args.interval is None and args.dist == "uniform":
            args.interval = 0.05
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
