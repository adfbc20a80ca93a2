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

Scenarios: ``small`` is 2,000 jobs with 200 in flight, ``large`` 10,000 with 1,000; the
fake's latency is uniform in ``--latency`` (default 2-6 s).

Run: ``python benchmarks/bench_webhooks.py --scenario both`` (``--smoke`` for a tiny run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fake import (  # the folder is on sys.path, not a package
    FakeProcess,
    code_under_test,
    run_child,
)
from bench_batch import (
    API_KEY,
    MODEL,
    SCENARIOS,
    parse_latency,
    peak_rss_kb,
    percentile,
    pinned_cpus,
    prompts,
    rss_kb,
)

CONTENDERS = ("flux", "webhook-loop")
TABLE_HEADER = (
    "| scenario | contender | wall s | CPU ms/job | req/job | queries/job | callbacks/job "
    "| lag p50 ms | lag p99 ms | max RSS MB | ok |"
)


async def run_flux(url: str, jobs: int, concurrency: int) -> tuple[dict[str, float], int]:
    """Run the batch with flux_async's webhook receiver; return {job id: seen at}, failures."""
    from flux_async import FluxClient, Limits, PollPolicy, ShortAPI, Webhooks

    seen: dict[str, float] = {}
    failures = 0
    provider = ShortAPI(api_key=API_KEY, base_url=url)
    async with FluxClient(
        provider,
        webhooks=Webhooks(host="127.0.0.1", port=0, grace=60),
        limits=Limits(max_jobs_in_flight=concurrency, max_connections=100),
        poll=PollPolicy(timeout=600),
        seed=1,
    ) as client:
        async for outcome in client.generate_many(prompts(jobs), concurrency=concurrency):
            if outcome.ok and outcome.job is not None and outcome.job.id is not None:
                seen[outcome.job.id] = outcome.finished_at
            else:
                failures += 1
    return seen, failures


async def run_loop(url: str, jobs: int, concurrency: int) -> tuple[dict[str, float], int]:
    """Run the batch with a minimal hand-written create-and-wait-for-callback loop."""
    import aiohttp
    from aiohttp import web

    seen: dict[str, float] = {}
    failures = 0
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def callback(request: web.Request) -> web.Response:
        future = waiting.get(request.match_info["token"])
        if future is None:
            return web.Response(status=404)
        body = await request.json()
        data = body.get("data", body)
        if data.get("status") in (2, 3, 4) and not future.done():
            future.set_result(data)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/cb/{token}", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/cb"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    create_url = f"{url}/api/v1/job/create"

    async def one(session: aiohttp.ClientSession, prompt: str) -> None:
        nonlocal failures
        token = secrets.token_urlsafe(16)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiting[token] = future
        body = {
            "model": MODEL,
            "args": {"prompt": prompt, "aspect_ratio": "1:1"},
            "callback_url": f"{base}/{token}",
        }
        try:
            async with session.post(create_url, json=body, headers=headers) as response:
                created = await response.json()
            job_id = created["data"]["job_id"]
            data = await future
        finally:
            del waiting[token]
        if data.get("status") == 2:
            seen[job_id] = time.monotonic()
        else:
            failures += 1

    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None]) -> None:
        nonlocal failures
        tasks.discard(task)
        slots.release()
        if task.exception() is not None:
            failures += 1

    try:
        async with aiohttp.ClientSession() as session:
            for prompt in prompts(jobs):
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(one(session, prompt))
                tasks.add(task)
                task.add_done_callback(done)
            while tasks:
                await asyncio.wait(set(tasks))
    finally:
        await runner.cleanup()
    return seen, failures


def child(args: argparse.Namespace) -> int:
    """Run one contender and print one JSON line with its measurements."""
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.contender == "webhook-loop":
        import aiohttp  # noqa: F401  (imported before the RSS baseline, as flux_async is)
    else:
        import flux_async  # noqa: F401
    baseline_rss = rss_kb()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run = run_loop if args.contender == "webhook-loop" else run_flux
    seen, failures = asyncio.run(run(args.url, args.jobs, args.concurrency))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "max_rss_kb": peak_rss_kb(),
                "baseline_rss_kb": baseline_rss,
                "failures": failures,
                "seen": seen,
            }
        )
    )
    return 0


def run_contender(
    contender: str, jobs: int, concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Start a fresh fake, run one contender in a child process, collect its numbers."""
    low, high = args.latency
    time_limit = 120 + 10 * (jobs / concurrency) * high
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
        ]
        result = run_child(contender, command, cpu=client_cpu, time_limit=time_limit)
        stats = fake.stats(detail=True)
    requests = stats["requests"]
    creates = requests.get("shortapi.create", 0)
    queries = requests.get("shortapi.query", 0)
    lags = sorted(
        seen_at - stats["jobs"][job_id]["ready_at"]
        for job_id, seen_at in result["seen"].items()
        if stats["jobs"].get(job_id, {}).get("ready_at") is not None
    )
    return {
        "contender": contender,
        "jobs": jobs,
        "ok": len(result["seen"]),
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


def orchestrate(args: argparse.Namespace) -> int:
    """Run the scenarios, print the comparison table; non-zero on lost jobs or a missed target."""
    if args.smoke:
        scenarios = {"smoke": (50, 10)}
    elif args.scenario == "both":
        scenarios = dict(SCENARIOS)
    else:
        scenarios = {args.scenario: SCENARIOS[args.scenario]}
    low, high = args.latency
    print(
        f"bench_webhooks ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs): fake latency "
        f"uniform {low:g}-{high:g} s, seed {args.seed}, median of {args.repeat} run(s); "
        f"{code_under_test()}",
        flush=True,
    )
    rows: list[tuple[str, dict[str, Any]]] = []
    for name, (jobs, concurrency) in scenarios.items():
        runs: dict[str, list[dict[str, Any]]] = {contender: [] for contender in CONTENDERS}
        for repeat in range(args.repeat):
            for contender in CONTENDERS if repeat % 2 == 0 else CONTENDERS[::-1]:
                print(f"  {name} run {repeat + 1}: {contender} ...", file=sys.stderr, flush=True)
                runs[contender].append(run_contender(contender, jobs, concurrency, args))
        for contender in CONTENDERS:
            row = dict(runs[contender][0])
            for key, value in row.items():
                if isinstance(value, float):
                    row[key] = statistics.median(run[key] for run in runs[contender])
            row["ok"] = min(run["ok"] for run in runs[contender])
            rows.append((name, row))
    print()
    print(TABLE_HEADER)
    print("|" + "---|" * (TABLE_HEADER.count("|") - 1))
    status = 0
    for name, row in rows:
        print(
            f"| {name} | {row['contender']} | {row['wall_s']:.1f} | {row['cpu_ms_per_job']:.2f} "
            f"| {row['requests_per_job']:.2f} | {row['queries_per_job']:.2f} "
            f"| {row['callbacks_per_job']:.2f} | {row['lag_p50_ms']:.0f} "
            f"| {row['lag_p99_ms']:.0f} | {row['max_rss_mb']:.1f} | {row['ok']}/{row['jobs']} |"
        )
        if row["ok"] != row["jobs"]:
            status = 1
    print()
    for name, row in rows:
        if row["contender"] == "flux":
            met = row["requests_per_job"] <= 2.0
            print(
                f"{name} flux: {row['requests_per_job']:.2f} requests per job "
                f"(target <= 2: {'met' if met else 'MISSED'})"
            )
            if not met:
                status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    """Parse the command line; orchestrate, or run one contender when ``--contender``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "both"), default="both")
    parser.add_argument("--latency", type=parse_latency, default=(2.0, 6.0), metavar="LOW,HIGH")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="a tiny run (CI)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin fake and client")
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
