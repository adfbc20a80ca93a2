"""Webhook mode: flux_async's callbacks against a hand-written webhook loop.

What is measured: N ShortAPI jobs with callbacks on, against a fake provider running in a
separate process (``python -m flux_async.testing``) that POSTs each job's callback to the
client when the job is ready. Each contender runs in its own child process, against a
freshly started fake, and for each run the table shows:

- wall time; client CPU ms per job (``time.process_time()`` over the batch);
- requests per job the fake received (creates + queries) and callbacks per job it sent;
- detection lag p50/p99: the fake's ``ready_at`` for the job (system-wide
  ``time.monotonic()``) to the moment the client's code has the result in hand;
- max RSS of the client process.

Contenders:

``webhook-loop``
    The minimal hand-written alternative: an ``aiohttp.web`` server on 127.0.0.1 with one
    route ``POST /cb/{token}``, a random token per job, one ``aiohttp.ClientSession`` for
    the creates, an ``asyncio.Semaphore`` of ``--concurrency``; a job ends when its callback
    says status 2. It trusts the callback as it stands (no verifying query, no fallback
    polling, no secret check): one request per job, the floor.
``flux``
    ``FluxClient(ShortAPI(...), webhooks=Webhooks(grace=60))`` and
    ``generate_many(prompts, concurrency=C)``: per-job 256-bit tokens stored as hashes, each
    terminal callback confirmed by one authenticated query (a forged callback cannot inject
    a URL), polling kept as a safety net after the grace period. Target: at most 2 requests
    per job (the create and the verifying query).
``flux-trusted``
    The same with ``Webhooks(trust_payload=True)``: the final state and image URLs taken
    from the callback itself (the URL's 256-bit token authenticates it), no verifying query.
    Target (issue 12): at most 1.05 requests per job and CPU per job <= 1.2x the loop's. A
    flux_async that refuses ``trust_payload`` for ShortAPI shows the row as unsupported.

Scenarios: ``small`` is 2,000 jobs with 200 in flight, ``large`` 10,000 with 1,000; the
fake's latency is uniform in ``--latency`` (default 2-6 s).

``--code DIR`` measures the flux_async in DIR (another revision); ``--contenders`` picks rows.

Run: ``python benchmarks/bench_webhooks.py --scenario both`` (``--smoke`` for a tiny run).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # the folder is on sys.path, not a package
    API_KEY,
    SCENARIOS,
    FakeProcess,
    Seen,
    add_code_argument,
    code_under_test,
    detection_lags,
    measure_child,
    median_row,
    parse_latency,
    percentile,
    pinned_cpus,
    print_table,
    prompts,
    run_child,
    webhook_loop,
)

CONTENDERS = ("flux", "flux-trusted", "webhook-loop")
TABLE_HEADER = (
    "scenario",
    "contender",
    "wall s",
    "CPU ms/job",
    "req/job",
    "queries/job",
    "callbacks/job",
    "lag p50 ms",
    "lag p99 ms",
    "max RSS MB",
    "ok",
)
UNSUPPORTED = "unsupported"


async def run_flux(
    url: str, jobs: int, concurrency: int, *, trusted: bool
) -> tuple[Seen, int, dict[str, Any]]:
    """Run the batch with flux_async's webhook receiver; return {job id: seen at}, failures."""
    from flux_async import FluxClient, Limits, PollPolicy, ShortAPI, Webhooks

    seen: Seen = {}
    failures = 0
    provider = ShortAPI(api_key=API_KEY, base_url=url)
    options: dict[str, Any] = {"trust_payload": True} if trusted else {}
    try:
        client = FluxClient(
            provider,
            webhooks=Webhooks(host="127.0.0.1", port=0, grace=60, **options),
            limits=Limits(max_jobs_in_flight=concurrency, max_connections=100),
            poll=PollPolicy(timeout=600),
            seed=1,
        )
    except (TypeError, ValueError) as exc:
        if not trusted:
            raise
        return seen, 0, {UNSUPPORTED: str(exc)}
    async with client:
        async for outcome in client.generate_many(prompts(jobs), concurrency=concurrency):
            if outcome.ok and outcome.job is not None and outcome.job.id is not None:
                seen[outcome.job.id] = outcome.finished_at
            else:
                failures += 1
    return seen, failures, {}


def child(args: argparse.Namespace) -> int:
    """Run one contender and print one JSON line with its measurements."""
    if args.contender == "webhook-loop":
        return measure_child(
            cpu=args.cpu,
            uses_flux=False,
            run=lambda: webhook_loop(args.url, args.jobs, args.concurrency),
        )
    return measure_child(
        cpu=args.cpu,
        uses_flux=True,
        run=lambda: run_flux(
            args.url, args.jobs, args.concurrency, trusted=args.contender == "flux-trusted"
        ),
    )


def run_contender(
    contender: str, jobs: int, concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Start a fresh fake, run one contender in a child process, collect its numbers."""
    low, high = args.latency
    time_limit = 120 + 10 * (jobs / concurrency) * high
    fake_cpu, client_cpu = pinned_cpus(args.no_pin)
    with FakeProcess("--latency", f"{low},{high}", seed=args.seed, cpu=fake_cpu) as fake:
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
        ]
        result = run_child(
            contender,
            command,
            cpu=client_cpu,
            time_limit=time_limit,
            code=None if contender == "webhook-loop" else args.code,
        )
        stats = fake.stats(detail=True)
    requests = stats["requests"]
    creates = requests.get("shortapi.create", 0)
    queries = requests.get("shortapi.query", 0)
    lags = detection_lags(result["seen"], stats)
    return {
        "contender": contender,
        "jobs": jobs,
        "ok": len(result["seen"]),
        UNSUPPORTED: result.get(UNSUPPORTED),
        "jobs_created": stats["jobs_created"],
        "wall_s": result["wall_s"],
        "cpu_ms_per_job": 1000 * result["cpu_s"] / jobs,
        "requests_per_job": (creates + queries) / jobs,
        "queries_per_job": queries / jobs,
        "callbacks_per_job": stats["callbacks_sent"] / jobs,
        "lag_p50_ms": 1000 * percentile(lags, 0.50),
        "lag_p99_ms": 1000 * percentile(lags, 0.99),
        "max_rss_mb": result["max_rss_kb"] / 1024,
    }


def table_row(name: str, row: dict[str, Any]) -> list[str]:
    """Format one result as the cells of a Markdown table row."""
    if row[UNSUPPORTED]:
        return [name, row["contender"], *(["n/a"] * (len(TABLE_HEADER) - 3)), UNSUPPORTED]
    return [
        name,
        row["contender"],
        f"{row['wall_s']:.1f}",
        f"{row['cpu_ms_per_job']:.2f}",
        f"{row['requests_per_job']:.2f}",
        f"{row['queries_per_job']:.2f}",
        f"{row['callbacks_per_job']:.2f}",
        f"{row['lag_p50_ms']:.0f}",
        f"{row['lag_p99_ms']:.0f}",
        f"{row['max_rss_mb']:.1f}",
        f"{row['ok']}/{row['jobs']}",
    ]


def orchestrate(args: argparse.Namespace) -> int:
    """Run the scenarios, print the comparison table; non-zero on lost jobs or a missed target."""
    if args.smoke:
        scenarios = {"smoke": (50, 10)}
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
    print(
        f"bench_webhooks ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs): fake latency "
        f"uniform {low:g}-{high:g} s, seed {args.seed}, median of {args.repeat} run(s); "
        f"{code_under_test(args.code)}",
        flush=True,
    )
    rows: list[tuple[str, dict[str, Any]]] = []
    for name, (jobs, concurrency) in scenarios.items():
        runs: dict[str, list[dict[str, Any]]] = {contender: [] for contender in contenders}
        for repeat in range(args.repeat):
            for contender in contenders if repeat % 2 == 0 else contenders[::-1]:
                print(f"  {name} run {repeat + 1}: {contender} ...", file=sys.stderr, flush=True)
                runs[contender].append(run_contender(contender, jobs, concurrency, args))
        rows.extend((name, median_row(runs[contender])) for contender in contenders)
    print()
    print_table(TABLE_HEADER, [table_row(name, row) for name, row in rows])
    print()
    return report(rows)


def report(rows: list[tuple[str, dict[str, Any]]]) -> int:
    """Print the targets; return 1 on lost jobs or a missed request target."""
    status = 0
    loops = {name: row for name, row in rows if row["contender"] == "webhook-loop"}
    for name, row in rows:
        contender = row["contender"]
        if row[UNSUPPORTED]:
            print(f"{name} {contender}: not measured, this flux_async refuses it: "
                  f"{row[UNSUPPORTED]}")
            continue
        if row["ok"] != row["jobs"]:
            print(f"{name} {contender}: only {row['ok']} of {row['jobs']} jobs succeeded")
            status = 1
        if contender == "webhook-loop":
            continue
        limit = 2.0 if contender == "flux" else 1.05
        met = row["requests_per_job"] <= limit
        line = (
            f"{name} {contender}: {row['requests_per_job']:.2f} requests per job "
            f"(target <= {limit:g}: {'met' if met else 'MISSED'})"
        )
        loop = loops.get(name)
        if loop is not None:
            ratio = row["cpu_ms_per_job"] / loop["cpu_ms_per_job"]
            line += f", CPU per job {ratio:.2f}x the loop's"
            if contender == "flux-trusted":
                line += f" (target <= 1.2x: {'met' if ratio <= 1.2 else 'missed'})"
        print(line)
        if not met and contender == "flux":
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    """Parse the command line; orchestrate, or run one contender when ``--contender``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "both"), default="both")
    parser.add_argument("--latency", type=parse_latency, default=(2.0, 6.0), metavar="LOW,HIGH")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, from {', '.join(CONTENDERS)} (default: all)",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run (CI)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin fake and client")
    add_code_argument(parser)
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.latency = (0.05, 0.2)
    if args.contender:
        return child(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
