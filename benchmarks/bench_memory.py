"""Memory per outstanding job: what flux_async keeps for each job it tracks (target <= 2 KB).

What is measured: the client's memory growth per outstanding job, for jobs that never
finish, with a poll policy so long (first check after an hour) that no poll runs while
measuring. Two parts, each run in fresh child processes (one measuring with
``tracemalloc``, one measuring RSS, since tracemalloc's own bookkeeping inflates RSS):

``e2e`` (end to end, over loopback)
    A real ``FluxClient(ShortAPI(...))`` submits 10,000 jobs with ``client.submit`` to a
    fake provider running in a separate process with ``--fault never_finish=1.0``; the
    benchmark keeps the returned `Job` handles, as a caller would. Counted: everything
    the client process allocated for those jobs: registry entry and indexes, scheduler
    heap item, the request and its prompt, the `Job` handle, and whatever aiohttp and
    asyncio still hold afterwards.
``direct`` (100,000 jobs, no HTTP)
    The registry and the poll scheduler driven directly, as the client drives them after
    a create was accepted: ``Registry.allocate``, the `GenerationRequest` stored on the
    entry, ``Registry.accept`` with a 24-hex job id and a ``Decimal`` cost, and
    ``PollScheduler.add`` with a one-hour first wait, on a running scheduler. Creating
    100,000 real jobs over HTTP takes minutes; this measures the same per-job state.

Both take a baseline after a warm-up batch of outstanding jobs (so the connection pool,
caches and the first dict resizes are not charged to the measured jobs), then report
(traced bytes after - before) / jobs and (RSS after - before) / jobs. Against: the
target of 2 KB (2,048 bytes) per outstanding job. The tracemalloc run also lists the
allocation sites that grew the most.

The fake provider runs in its own process, started by the orchestrator (fresh for each
e2e measurement); ``--code DIR`` measures the flux_async in DIR (another revision).

Run: ``python benchmarks/bench_memory.py`` (``--smoke`` for a tiny run).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import linecache
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # the folder is on sys.path, not a package
    API_KEY,
    FakeProcess,
    add_code_argument,
    code_under_test,
    print_table,
    rss_bytes,
    run_child,
)

TARGET_BYTES = 2048
TABLE_HEADER = (
    "part",
    "how",
    "outstanding jobs",
    "traced bytes/job",
    "RSS bytes/job",
    "target",
    "met",
)
HOW = {
    "e2e": "FluxClient.submit over loopback (fake in another process)",
    "direct": "Registry + PollScheduler driven directly (no HTTP)",
}
_TOP_SITES = 8


class Meter:
    """Take a baseline and a final reading with tracemalloc or with RSS."""

    def __init__(self, measure: str) -> None:
        self.measure = measure
        self._before = 0
        self._snapshot: tracemalloc.Snapshot | None = None
        if measure == "tracemalloc":
            tracemalloc.start(1)

    def _read(self) -> int:
        gc.collect()
        if self.measure == "tracemalloc":
            return tracemalloc.get_traced_memory()[0]
        return rss_bytes()

    def baseline(self) -> None:
        self._before = self._read()
        if self.measure == "tracemalloc":
            self._snapshot = tracemalloc.take_snapshot()

    def delta(self, jobs: int) -> tuple[int, list[str]]:
        """Return bytes grown since the baseline, and the top growing allocation sites."""
        grown = self._read() - self._before
        sites: list[str] = []
        if self._snapshot is not None:
            after = tracemalloc.take_snapshot()
            for stat in after.compare_to(self._snapshot, "lineno")[:_TOP_SITES]:
                frame = stat.traceback[0]
                where = frame.filename
                for marker in ("flux_async/", "benchmarks/", "site-packages/", "python3."):
                    if marker in where:
                        where = marker + where.split(marker, 1)[1]
                        break
                where = where.removeprefix("site-packages/")
                source = linecache.getline(frame.filename, frame.lineno).strip()
                sites.append(
                    f"{stat.size_diff / jobs:+6.0f} B/job ({stat.count_diff / jobs:+.1f} blocks): "
                    f"{where}:{frame.lineno}: {source[:70]}"
                )
        return grown, sites


async def measure_e2e(url: str, jobs: int, warmup: int, meter: Meter) -> dict[str, Any]:
    """Submit never-finishing jobs through a real client; return the growth per job."""
    from flux_async import FluxClient, Job, Limits, PollPolicy, ShortAPI

    limits = Limits(max_jobs_in_flight=jobs + warmup, max_connections=100)
    policy = PollPolicy(wait_first=3600.0, timeout=7200.0)
    provider = ShortAPI(api_key=API_KEY, base_url=url)
    handles: list[Job] = []
    async with FluxClient(provider, limits=limits, poll=policy, seed=1) as client:

        async def submit_all(start: int, count: int) -> None:
            numbers = iter(range(start, start + count))

            async def worker() -> None:
                for number in numbers:
                    handles.append(await client.submit(f"memory job {number:06d}"))

            await asyncio.gather(*(worker() for _ in range(100)))

        await submit_all(0, warmup)
        meter.baseline()
        started = time.perf_counter()
        await submit_all(warmup, jobs)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.2)  # let finished create tasks be collected
        grown, sites = meter.delta(jobs)
        outstanding = client.outstanding
    if outstanding != jobs + warmup:
        raise RuntimeError(f"expected {jobs + warmup} outstanding jobs, found {outstanding}")
    return {"grown": grown, "sites": sites, "submit_s": elapsed}


async def measure_direct(url: str, jobs: int, warmup: int, meter: Meter) -> dict[str, Any]:
    """Drive the registry and the scheduler as the client does after accepted creates."""
    import random
    from decimal import Decimal

    from flux_async import GenerationRequest, PollPolicy
    from flux_async._registry import Registry
    from flux_async._scheduler import PollScheduler

    rng = random.Random(1)
    slots = asyncio.Semaphore(100)

    async def never_polled(entry: Any) -> None:
        raise AssertionError("no poll may run during the measurement")

    registry = Registry(clock=time.time)
    policy = PollPolicy(wait_first=3600.0, timeout=7200.0)
    scheduler = PollScheduler(
        policy=policy,
        first_wait=3600.0,
        polls_per_second=40.0,
        acquire_slot=slots.acquire,
        release_slot=slots.release,
        poll=never_polled,
        on_deadline=lambda entry: None,
        rng=rng,
    )
    scheduler.start()

    def add(start: int, count: int) -> None:
        for number in range(start, start + count):
            entry = registry.allocate("shortapi", "shortapi/flux-1.0/text-to-image")
            entry.request = GenerationRequest(prompt=f"memory job {number:06d}")
            # A cost decoded from each answer's "amount" string, as the adapter does.
            registry.accept(entry, f"{rng.getrandbits(96):024x}", Decimal("0.02"))
            scheduler.add(entry)

    try:
        add(0, warmup)
        meter.baseline()
        started = time.perf_counter()
        add(warmup, jobs)
        elapsed = time.perf_counter() - started
        grown, sites = meter.delta(jobs)
        if registry.active != jobs + warmup or len(scheduler) != jobs + warmup:
            raise RuntimeError("the registry or the scheduler lost jobs")
    finally:
        await scheduler.stop()
    return {"grown": grown, "sites": sites, "submit_s": elapsed}


def child(args: argparse.Namespace) -> int:
    """Measure one part with one method and print a JSON line."""
    import flux_async  # noqa: F401  (imported before any baseline)

    meter = Meter(args.measure)
    measure = measure_e2e if args.part == "e2e" else measure_direct
    result = asyncio.run(measure(args.url, args.jobs, args.warmup, meter))
    result.update(part=args.part, measure=args.measure, jobs=args.jobs)
    print(json.dumps(result))
    return 0


def measure_in_child(
    part: str, measure: str, jobs: int, warmup: int, code: str | None
) -> dict[str, Any]:
    """Run one measurement in a fresh process; for ``e2e``, against a fresh fake."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--part",
        part,
        "--measure",
        measure,
        "--jobs",
        str(jobs),
        "--warmup",
        str(warmup),
    ]
    name = f"{part}/{measure}"
    if part == "direct":
        return run_child(name, [*command, "--url", ""], time_limit=600, code=code)
    with FakeProcess("--latency", "1", "--fault", "never_finish=1.0") as fake:
        result = run_child(name, [*command, "--url", fake.url], time_limit=600, code=code)
        stats = fake.stats(detail=False)
    if stats["requests"].get("shortapi.query", 0):
        raise RuntimeError(f"{name}: no poll may run while measuring: {stats['requests']}")
    return result


def orchestrate(args: argparse.Namespace) -> int:
    """Run both parts with both methods and print the table."""
    sizes = (
        {"e2e": (200, 20), "direct": (1_000, 100)}
        if args.smoke
        else {
            "e2e": (args.e2e_jobs, 1_000),
            "direct": (args.direct_jobs, 1_000),
        }
    )
    print(
        f"bench_memory ({time.strftime('%Y-%m-%d')}): bytes per outstanding job; "
        f"{code_under_test(args.code)}",
        flush=True,
    )
    rows: list[list[str]] = []
    results: list[dict[str, Any]] = []
    sites: dict[str, list[str]] = {}
    for part, (jobs, warmup) in sizes.items():
        print(f"  measuring {part}: {jobs} outstanding jobs ...", file=sys.stderr, flush=True)
        traced = measure_in_child(part, "tracemalloc", jobs, warmup, args.code)
        rss = measure_in_child(part, "rss", jobs, warmup, args.code)
        sites[part] = traced["sites"]
        traced_per_job = traced["grown"] / jobs
        rss_per_job = rss["grown"] / jobs
        met = "yes" if max(traced_per_job, rss_per_job) <= TARGET_BYTES else "no"
        results.append(
            {
                "part": part,
                "jobs": jobs,
                "traced_bytes_per_job": traced_per_job,
                "rss_bytes_per_job": rss_per_job,
            }
        )
        rows.append(
            [
                part,
                HOW[part],
                f"{jobs:,}",
                f"{traced_per_job:,.0f}",
                f"{rss_per_job:,.0f}",
                f"<= {TARGET_BYTES:,}",
                met,
            ]
        )
    print()
    print_table(TABLE_HEADER, rows)
    for part, lines in sites.items():
        print(f"\n{part}: the allocation sites that grew the most (tracemalloc):")
        for line in lines:
            print(f"  {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line; orchestrate, or run one measurement when ``--child``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--e2e-jobs",
        type=int,
        default=10_000,
        help="outstanding jobs created over HTTP (default 10,000)",
    )
    parser.add_argument(
        "--direct-jobs",
        type=int,
        default=100_000,
        help="outstanding jobs in the registry and scheduler (default 100,000)",
    )
    parser.add_argument("--smoke", action="store_true", help="200 and 1,000 jobs")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=("e2e", "direct"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=("tracemalloc", "rss"), help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    add_code_argument(parser)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
