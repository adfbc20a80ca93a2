"""Distributed batches on Redis: 1, 2 and 4 worker processes against one in-memory process.

What is measured: ``--size`` ShortAPI jobs (10,000 by default) against the fake provider in
its own process (``python -m flux_async.testing``, restarted for every row so its counters
belong to one row) and a real ``redis-server`` (started here, no persistence, flushed before
every row). Rows:

``memory``
    The yardstick: one process, ``FluxClient.generate_many(prompts, concurrency=C)`` with
    the in-memory store (what exists without Redis).
``redis xK``
    K processes of ``flux_async.workers.run_worker`` reading one Redis Stream through a
    consumer group (concurrency C/K each, so every row has C jobs outstanding), fed and
    drained by one more process that enqueues the prompts and collects every outcome
    (``enqueue`` + ``collect``). The workers start first and wait on the stream, so import
    time is not counted.

Every row uses the same poll policy (a fixed ``--interval``, first check at the fake's low
latency) and downloads nothing. Columns: wall time (first create or enqueue to last
outcome), throughput, client CPU ms per job (the sum over the client processes of
``time.process_time()`` across the batch, enqueue/collect process included), Redis server
CPU ms per job, requests per job (creates + queries, counted by the fake), 429s, and the
CPU-per-job ratio of each row to ``memory`` (the ``redis x1`` ratio is the overhead of the
Redis batch path for one process; the issue's target is <= 1.3x).

Run: ``python benchmarks/bench_redis.py`` (``--size 2000`` for a quicker run; ``--smoke``
for a seconds-long check).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import API_KEY, HERE, FakeProcess, print_table


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway redis-server on a free loopback port (no persistence)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench_redis: redis-server is not installed")
        self.port = _free_port()
        self._dir = tempfile.mkdtemp(prefix="bench-redis-")
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self._process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def flush(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "flushall"], check=True,
            stdout=subprocess.DEVNULL,
        )

    def close(self) -> None:
        self._process.kill()
        self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


# -- children -------------------------------------------------------------------------------


def _prompts(size: int) -> list[str]:
    return [f"benchmark job {index:06d}: a red fox in the snow" for index in range(size)]


def _client_options(args: argparse.Namespace, concurrency: int) -> dict[str, Any]:
    from flux_async import Limits, PollPolicy

    low = float(args.latency.split(",")[0])
    return {
        "poll": PollPolicy.fixed(args.interval, first=low, timeout=600),
        "limits": Limits(
            max_jobs_in_flight=concurrency, max_connections=100,
            polls_per_second=2 * concurrency / args.interval,
        ),
    }


def child_memory(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from flux_async import FluxClient, ShortAPI

    async def run() -> dict[str, Any]:
        provider = ShortAPI(api_key=API_KEY, base_url=args.fake)
        options = _client_options(args, args.concurrency)
        async with FluxClient(provider, **options) as client:
            started, cpu = time.monotonic(), time.process_time()
            ok = 0
            async for outcome in client.generate_many(
                _prompts(args.size), concurrency=args.concurrency
            ):
                ok += outcome.ok
            return {"wall": time.monotonic() - started, "cpu": time.process_time() - cpu,
                    "ok": ok}

    return asyncio.run(run())


def child_worker(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from flux_async import ShortAPI
    from flux_async.workers import run_worker

    async def run() -> dict[str, Any]:
        provider = ShortAPI(api_key=API_KEY, base_url=args.fake)
        print("ready", flush=True)
        cpu = time.process_time()
        stats = await run_worker(
            args.redis, provider, name=f"bench-{os.getpid()}", concurrency=args.concurrency,
            exit_when_idle=3.0, client_options=_client_options(args, args.concurrency),
        )
        return {"cpu": time.process_time() - cpu, "finished": stats.finished}

    return asyncio.run(run())


def child_feed(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from flux_async.workers import collect, enqueue

    async def run() -> dict[str, Any]:
        started, cpu = time.monotonic(), time.process_time()
        batch = await enqueue(args.redis, _prompts(args.size))
        ok = 0
        async for record in collect(args.redis, batch, block=0.2):
            ok += record["status"] == "succeeded"
        return {"wall": time.monotonic() - started, "cpu": time.process_time() - cpu, "ok": ok}

    return asyncio.run(run())


CHILDREN = {"memory": child_memory, "worker": child_worker, "feed": child_feed}


# -- orchestration --------------------------------------------------------------------------


def _spawn(args: argparse.Namespace, child: str, **extra: Any) -> subprocess.Popen[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", child,
               "--size", str(args.size), "--latency", args.latency,
               "--interval", str(args.interval)]
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=HERE)


def _result(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({process.returncode}): {err[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline().strip() if ready else ""
    if line != "ready":
        raise RuntimeError(f"worker did not start: {line!r}")


def run_row(args: argparse.Namespace, redis: RedisServer, workers: int) -> dict[str, Any]:
    redis.flush()
    with FakeProcess("--latency", args.latency, seed=1) as fake:
        redis_cpu = redis.cpu_seconds()
        if workers == 0:
            result = _result(_spawn(args, "memory", fake=fake.url,
                                    concurrency=args.concurrency), timeout=3600)
            cpu = result["cpu"]
        else:
            each = max(1, args.concurrency // workers)
            procs = [_spawn(args, "worker", fake=fake.url, redis=redis.url, concurrency=each)
                     for _ in range(workers)]
            for process in procs:
                _wait_ready(process)
            result = _result(_spawn(args, "feed", fake=fake.url, redis=redis.url),
                             timeout=3600)
            done = [_result(process, timeout=120) for process in procs]
            cpu = result["cpu"] + sum(worker["cpu"] for worker in done)
        stats = fake.stats(detail=False)
        requests = stats["requests"]
        sent = requests.get("shortapi.create", 0) + requests.get("shortapi.query", 0)
        return {
            "row": "memory" if workers == 0 else f"redis x{workers}",
            "wall": result["wall"],
            "ok": result["ok"],
            "cpu_ms_per_job": 1000 * cpu / args.size,
            "redis_ms_per_job": 1000 * (redis.cpu_seconds() - redis_cpu) / args.size,
            "requests_per_job": sent / args.size,
            "rejected_429": stats.get("rejected_429", 0),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="jobs per row (10000)")
    parser.add_argument("--concurrency", type=int, default=500,
                        help="jobs outstanding per row, split over the workers (500)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts (1,2,4)")
    parser.add_argument("--latency", default="0.5,1.5", help="the fake's LOW,HIGH seconds")
    parser.add_argument("--interval", type=float, default=0.25, help="poll interval (0.25)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long check")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--fake", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)), flush=True)
        return
    if args.smoke:
        args.size, args.concurrency, args.workers, args.latency = 200, 50, "1,2", "0.05,0.2"
    counts = [int(part) for part in args.workers.split(",")]
    redis = RedisServer()
    try:
        rows = [run_row(args, redis, workers) for workers in (0, *counts)]
    finally:
        redis.close()
    base = rows[0]["cpu_ms_per_job"]
    print(f"{args.size} jobs, concurrency {args.concurrency} per row, fake latency "
          f"{args.latency} s, poll interval {args.interval} s, {os.cpu_count()} CPUs\n")
    print_table(
        ["row", "wall s", "jobs/s", "client CPU ms/job", "vs memory", "redis CPU ms/job",
         "requests/job", "429s", "ok"],
        [
            [row["row"], f"{row['wall']:.2f}", f"{args.size / row['wall']:.0f}",
             f"{row['cpu_ms_per_job']:.3f}", f"{row['cpu_ms_per_job'] / base:.2f}x",
             f"{row['redis_ms_per_job']:.3f}", f"{row['requests_per_job']:.2f}",
             str(row["rejected_429"]), f"{row['ok']}/{args.size}"]
            for row in rows
        ],
    )


if __name__ == "__main__":
    main()
