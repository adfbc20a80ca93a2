"""What the SQLite journal itself costs per job, without HTTP: the writes a 10,000-job batch
makes, in the pattern a batch makes them.

``bench_batch.py --journal`` compares whole batches with the journal on and off. There the
journal's cost is small next to the HTTP work, and the difference between runs also
includes how many polls each run happened to make: the poll schedule reacts to how creates
are spread in time, and the journal's synced writes spread them. This benchmark measures
only the journal. Each store (``memory``: `MemoryStore`, the baseline; ``sqlite``:
`SQLiteJournal`) gets the same event pattern:

- creates in waves of ``--wave`` (default 6, about what a 10,000-job batch with 1,000 in
  flight groups per synced commit): their records are written together (``put_allocated``
  awaited, as `CreateLane` does before sending);
- one tick later the acceptances (``put_accepted``), then ``queued`` and ``running``, each
  in its own tick;
- ``--in-flight`` jobs later (default 1,000), the job's end (``put_finished`` with one
  image), as the oldest jobs finish.

Printed: the CPU of this process per job (``time.process_time()``, which includes the
journal's writer thread), wall time, and the journal's transactions (all of them, and the
synced ones). Each store runs in a fresh child process, ``--repeat`` times in alternating
order; the medians are shown.

``--code DIR`` measures the flux_async in ``DIR`` (e.g. a ``git worktree`` of another
revision). Run: ``python benchmarks/bench_journal.py`` (``--smoke``: 500 jobs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def _run(
    store_kind: str, jobs: int, wave: int, in_flight: int, folder: str
) -> dict[str, Any]:
    import asyncio
    import secrets

    from flux_async import GenerationRequest, Image, JobStatus
    from flux_async._store import JobRecord, MemoryStore
    from flux_async.stores.sqlite import SQLiteJournal

    store: Any = (
        SQLiteJournal(Path(folder) / "bench.sqlite") if store_kind == "sqlite" else MemoryStore()
    )
    await store.open()
    await store.begin_batch("bench")
    live: list[str] = []

    async def allocate(index: int) -> str:
        request = GenerationRequest(prompt=f"bench prompt {index}: a lighthouse at dusk")
        record = JobRecord.allocate(
            request,
            local_id=secrets.token_hex(8),
            provider="shortapi",
            model="flux-dev",
            created_at=time.time(),
            batch_id="bench",
            index=index,
            token_hash=None,
        )
        await store.put_allocated(record)
        return record.local_id

    def finish(count: int) -> None:
        for local_id in live[:count]:
            store.put_finished(
                local_id,
                JobStatus.SUCCEEDED,
                images=(Image(url=f"https://cdn.example/{local_id}.png"),),
                polls=6,
            )
        del live[:count]

    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, jobs, wave):
        ids = await asyncio.gather(*(allocate(i) for i in range(start, min(start + wave, jobs))))
        await asyncio.sleep(0)
        for local_id in ids:
            store.put_accepted(local_id, f"job-{local_id}")
        await asyncio.sleep(0)
        for local_id in ids:
            store.put_status(local_id, JobStatus.QUEUED)
        await asyncio.sleep(0)
        for local_id in ids:
            store.put_status(local_id, JobStatus.RUNNING)
        live.extend(ids)
        if len(live) > in_flight:
            finish(len(live) - in_flight)
    finish(len(live))
    await store.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result = {
        "store": store_kind,
        "jobs": jobs,
        "cpu_us_per_job": cpu / jobs * 1e6,
        "wall_s": wall,
        "transactions": getattr(store, "transactions", 0),
        "durable_transactions": getattr(store, "durable_transactions", 0),
    }
    await store.aclose()
    return result


def child(args: argparse.Namespace) -> int:
    import asyncio

    with tempfile.TemporaryDirectory(prefix="bench-journal-") as folder:
        result = asyncio.run(_run(args.store, args.jobs, args.wave, args.in_flight, folder))
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--wave", type=int, default=6, help="records written per synced commit")
    parser.add_argument("--in-flight", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default="memory,sqlite")
    parser.add_argument("--code", default=None, help="measure the flux_async in this directory")
    parser.add_argument("--smoke", action="store_true", help="500 jobs, one run each")
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.store is not None:
        return child(args)
    if args.smoke:
        args.jobs, args.repeat, args.in_flight = 500, 1, 50
    env = dict(os.environ)
    root = str(Path(args.code).resolve()) if args.code else str(HERE.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    stores = args.stores.split(",")
    runs: dict[str, list[dict[str, Any]]] = {store: [] for store in stores}
    for repeat in range(args.repeat):
        for store in stores if repeat % 2 == 0 else reversed(stores):
            finished = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--store",
                    store,
                    "--jobs",
                    str(args.jobs),
                    "--wave",
                    str(args.wave),
                    "--in-flight",
                    str(args.in_flight),
                ],
                capture_output=True,
                text=True,
                env=env,
                check=False,
                cwd=root,
            )
            if finished.returncode != 0:
                print(finished.stderr, file=sys.stderr)
                return 1
            runs[store].append(json.loads(finished.stdout.strip().splitlines()[-1]))
    print(
        f"bench_journal ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs): {args.jobs} jobs, "
        f"waves of {args.wave}, {args.in_flight} in flight, median of {args.repeat}; "
        f"flux_async from {root}"
    )
    print("| store | CPU µs/job | wall s | transactions | synced |")
    print("|---|---|---|---|---|")
    for store, results in runs.items():

        def median(key: str, results: list[dict[str, Any]] = results) -> float:
            return statistics.median(result[key] for result in results)

        print(
            f"| {store} | {median('cpu_us_per_job'):.0f} | {median('wall_s'):.2f} | "
            f"{median('transactions'):.0f} | {median('durable_transactions'):.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
