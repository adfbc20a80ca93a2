"""What the benchmarks share (a helper module, not a benchmark).

- `FakeProcess`: the fake provider (``python -m flux_async.testing``) in its own process,
  its counters read over HTTP with the standard library;
- `run_child`: run one measurement in a fresh child process and read its JSON line;
- ``--code DIR``: the client children import flux_async from ``DIR`` (a git worktree of
  another revision) instead of this checkout, so two revisions can be measured back to
  back against the same fake and the same hand-written loop (see ``compare_revisions.py``);
- the hand-written aiohttp loops every benchmark measures as its yardstick
  (`poll_loop`, `webhook_loop`);
- measurement helpers: RSS, CPU pinning, detection lag, percentiles, medians, tables.

The orchestrating process never imports aiohttp or flux_async; the children import them
inside the functions that need them, after the RSS baseline is taken by the caller.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "API_KEY",
    "CONNECTIONS",
    "HERE",
    "MODEL",
    "SCENARIOS",
    "FakeProcess",
    "Seen",
    "add_code_argument",
    "child_env",
    "code_under_test",
    "detection_lags",
    "fake_supports",
    "measure_child",
    "median_row",
    "parse_latency",
    "peak_rss_kb",
    "percentile",
    "pinned_cpus",
    "poll_loop",
    "print_table",
    "prompts",
    "rss_bytes",
    "run_child",
    "webhook_loop",
]

API_KEY = "bench-key"
MODEL = "shortapi/flux-1.0/text-to-image"
CONNECTIONS = 100  # aiohttp's default connector limit, which the hand-written loops use
SCENARIOS = {"small": (2_000, 200), "large": (10_000, 1_000)}

HERE = Path(__file__).resolve().parent
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0

Seen = dict[str, float]  # provider job id -> time.monotonic() when the client had the result


# -- processes ------------------------------------------------------------------------------


def child_env(code: str | None) -> dict[str, str] | None:
    """Return the environment for a client child: flux_async imported from ``code``."""
    if code is None:
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(Path(code).resolve()), env.get("PYTHONPATH", "")) if part
    )
    return env


def add_code_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--code DIR`` (which flux_async the client children import)."""
    parser.add_argument(
        "--code",
        default=None,
        metavar="DIR",
        help="import flux_async from DIR in the client processes (e.g. a git worktree of "
        "another revision); the fake and the hand-written loop stay this checkout's",
    )


def code_under_test(code: str | None = None) -> str:
    """Name the flux_async the client children import: version, directory, git commit."""
    probe = "import flux_async, pathlib; print(flux_async.__version__, "
    probe += "pathlib.Path(flux_async.__file__).resolve().parent)"
    finished = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=child_env(code),
        cwd=HERE,  # not the current directory: `-c` would import its flux_async first
        timeout=60,
        check=False,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"cannot import flux_async:\n{finished.stderr[-2000:]}")
    version, where = finished.stdout.split(maxsplit=1)
    where = where.strip()
    commit = subprocess.run(
        ["git", "-C", where, "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"flux_async {version} from {where}" + (f" (git {commit})" if commit else "")


def fake_supports(option: str) -> bool:
    """Tell whether ``python -m flux_async.testing --help`` mentions ``option``."""
    finished = subprocess.run(
        [sys.executable, "-m", "flux_async.testing", "--help"],
        capture_output=True,
        text=True,
        cwd=HERE,
        timeout=60,
        check=False,
    )
    return option in finished.stdout


class FakeProcess:
    """A `flux_async.testing` server in a child process, stopped with SIGTERM.

    ``args``: its command-line options (latency, faults, ...); ``cpu``: pin it to this CPU
    (Linux), so that it and the client under test do not trade cores from run to run.
    The fake is the flux_async the orchestrator imports (this checkout, or ``PYTHONPATH``),
    whatever ``--code`` says: it is part of the yardstick.
    """

    def __init__(self, *args: str, seed: int = 0, cpu: int | None = None) -> None:
        self._args = [
            sys.executable,
            "-m",
            "flux_async.testing",
            "--port",
            "0",
            "--seed",
            str(seed),
            *args,
        ]
        self._pin = cpu
        self._process: subprocess.Popen[str] | None = None
        self._cpu_at_start = 0.0
        self.url = ""

    def __enter__(self) -> FakeProcess:
        process = subprocess.Popen(
            self._args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=HERE,  # not the current directory: `-m` would import its flux_async first
        )
        self._process = process
        if self._pin is not None:
            os.sched_setaffinity(process.pid, {self._pin})
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], _START_TIMEOUT)
        line = process.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            error = self._stop()
            raise RuntimeError(
                f"the fake provider did not start ({' '.join(self._args[3:])}): "
                f"first line {line!r}\n{error[-2000:]}"
            )
        self.url = line
        self._cpu_at_start = self.cpu_seconds()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def cpu_seconds(self) -> float:
        """Return the CPU seconds (user + system) the fake has used so far (Linux only)."""
        if self._process is None:
            return 0.0
        try:
            with open(f"/proc/{self._process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # Fields 14 and 15 of proc(5) (utime, stime); the split starts at field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_since_start(self) -> float:
        """Return the CPU seconds the fake used since it printed its URL."""
        return self.cpu_seconds() - self._cpu_at_start

    def stats(self, *, detail: bool = True) -> dict[str, Any]:
        """Return the fake's counters (``GET /_fake/stats``)."""
        import urllib.request

        url = f"{self.url}/_fake/stats?detail={1 if detail else 0}"
        with urllib.request.urlopen(url, timeout=60) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def _stop(self) -> str:
        process = self._process
        if process is None:
            return ""
        self._process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        return stderr or ""


def run_child(
    name: str,
    command: Sequence[str],
    *,
    time_limit: float,
    cpu: int | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """Run one measurement in a fresh process; return the JSON object on its last line.

    ``cpu``: appended as ``--cpu N`` (the child pins itself); ``code``: see `child_env`.
    """
    command = list(command)
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    finished = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=time_limit,
        env=child_env(code),
        check=False,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"{name} exited {finished.returncode}:\n{finished.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


def pinned_cpus(no_pin: bool) -> tuple[int | None, int | None]:
    """Return the CPUs for the fake and the client, or Nones when not pinning."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if no_pin or len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


# -- measuring inside a child ------------------------------------------------------------------


def rss_bytes() -> int:
    """Return this process's current resident set size in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize()


def peak_rss_kb() -> int:
    """Return this process's peak resident set size in KiB (Linux ``VmHWM``).

    Not ``ru_maxrss``: Linux carries it across ``exec``, so a child started by a parent
    with a larger RSS (``subprocess`` uses vfork) reports the parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_child(
    *,
    cpu: int | None,
    uses_flux: bool,
    run: Callable[[], Coroutine[Any, Any, tuple[Seen, int, dict[str, Any]]]],
) -> int:
    """Run one contender's batch in this (child) process and print one JSON line.

    ``run`` returns {job id: monotonic time the result was in hand}, the number of failed
    jobs, and extra fields for the JSON line. Measured: wall, CPU (user + system, and the
    system part), context switches, peak RSS and the RSS after imports.
    """
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if uses_flux:
        import flux_async  # noqa: F401  (imported before the RSS baseline)
    else:
        import aiohttp  # noqa: F401  (likewise: the loops' only dependency)
    baseline_rss_kb = rss_bytes() // 1024
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    seen, failures, extra = asyncio.run(run())
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "wall_s": wall_s,
                "cpu_s": cpu_s,
                "sys_s": usage.ru_stime - usage0.ru_stime,
                "context_switches": (usage.ru_nvcsw - usage0.ru_nvcsw)
                + (usage.ru_nivcsw - usage0.ru_nivcsw),
                "max_rss_kb": peak_rss_kb(),
                "baseline_rss_kb": baseline_rss_kb,
                "failures": failures,
                "seen": seen,
                **extra,
            }
        )
    )
    return 0


# -- the hand-written loops (the yardstick) ------------------------------------------------


def prompts(jobs: int) -> Iterator[str]:
    """Yield the batch's prompts (the same for every contender)."""
    return (f"benchmark job {index:06d}: a red fox in the snow" for index in range(jobs))


async def _bounded(
    jobs: int, concurrency: int, one: Callable[[str], Coroutine[Any, Any, None]]
) -> int:
    """Run ``one(prompt)`` for every prompt, ``concurrency`` at a time; return crashes."""
    crashes = 0
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None]) -> None:
        nonlocal crashes
        tasks.discard(task)
        slots.release()
        if task.exception() is not None:
            crashes += 1

    loop = asyncio.get_running_loop()
    for prompt in prompts(jobs):
        await slots.acquire()
        task = loop.create_task(one(prompt))
        tasks.add(task)
        task.add_done_callback(done)
    while tasks:
        await asyncio.wait(set(tasks))
    return crashes


def _retry_after(headers: Any, default: float) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", default)))
    except ValueError:
        return default


async def poll_loop(
    url: str, jobs: int, concurrency: int, interval: float
) -> tuple[Seen, int, dict[str, Any]]:
    """The minimal hand-written create-and-poll loop, as a user would write it.

    One ``aiohttp.ClientSession`` (default connector: 100 connections), an
    ``asyncio.Semaphore(concurrency)``, and per job: ``POST /api/v1/job/create``, then
    sleep ``interval`` and ``GET /api/v1/job/query?id=`` until ``data.status == 2``. A 429
    answer is retried after its ``Retry-After`` (else ``interval``) and counted.
    """
    import aiohttp

    seen: Seen = {}
    failures = 0
    got_429 = 0
    headers = {"Authorization": f"Bearer {API_KEY}"}
    create_url = f"{url}/api/v1/job/create"
    query_url = f"{url}/api/v1/job/query"

    async def one(session: aiohttp.ClientSession, prompt: str) -> None:
        nonlocal failures, got_429
        body = {"model": MODEL, "args": {"prompt": prompt, "aspect_ratio": "1:1"}}
        while True:
            async with session.post(create_url, json=body, headers=headers) as response:
                if response.status == 429:
                    got_429 += 1
                    wait = _retry_after(response.headers, interval)
                else:
                    created = await response.json()
                    break
            await asyncio.sleep(wait)
        job_id = created["data"]["job_id"]
        while True:
            await asyncio.sleep(interval)
            async with session.get(query_url, params={"id": job_id}, headers=headers) as response:
                if response.status == 429:
                    got_429 += 1
                    await asyncio.sleep(_retry_after(response.headers, 0.0))
                    continue
                data = (await response.json())["data"]
            if data["status"] == 2:
                seen[job_id] = time.monotonic()
                return
            if data["status"] not in (0, 1):
                failures += 1
                return

    async with aiohttp.ClientSession() as session:
        crashes = await _bounded(jobs, concurrency, lambda prompt: one(session, prompt))
    return seen, failures + crashes, {"client_429": got_429}


async def webhook_loop(
    url: str, jobs: int, concurrency: int
) -> tuple[Seen, int, dict[str, Any]]:
    """The minimal hand-written webhook loop: the floor of one request per job.

    An ``aiohttp.web`` server on 127.0.0.1 with one route ``POST /cb/{token}``, a random
    token per job, one ``aiohttp.ClientSession`` for the creates, an
    ``asyncio.Semaphore(concurrency)``; a job ends when its callback says status 2. It
    trusts the callback as it stands: no verifying query, no fallback polling.
    """
    import aiohttp
    from aiohttp import web

    seen: Seen = {}
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

    try:
        async with aiohttp.ClientSession() as session:
            crashes = await _bounded(jobs, concurrency, lambda prompt: one(session, prompt))
    finally:
        await runner.cleanup()
    return seen, failures + crashes, {}


# -- numbers and tables ----------------------------------------------------------------------


def parse_latency(text: str) -> tuple[float, float]:
    """Parse ``LOW,HIGH`` (or one number) seconds, as the fake's ``--latency`` takes it."""
    try:
        parts = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("latency is SECONDS or LOW,HIGH") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 0 < parts[0] <= parts[1]:
        raise argparse.ArgumentTypeError("latency is SECONDS or LOW,HIGH with 0 < LOW <= HIGH")
    return parts[0], parts[1]


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of sorted ``values`` (``nan`` when empty)."""
    if not values:
        return float("nan")
    rank = max(0, min(len(values) - 1, round(fraction * len(values)) - 1))
    return values[rank]


def detection_lags(seen: Seen, stats: dict[str, Any]) -> list[float]:
    """Return the sorted detection lags in seconds: result in hand minus the fake's ready_at.

    Both are ``time.monotonic()`` values, which is system-wide on Linux.
    """
    jobs = stats["jobs"]
    return sorted(
        seen_at - jobs[job_id]["ready_at"]
        for job_id, seen_at in seen.items()
        if jobs.get(job_id, {}).get("ready_at") is not None
    )


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine repeated runs of one contender: the median of every float, the worst ``ok``."""
    row = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            row[key] = statistics.median(run[key] for run in runs)
    row["ok"] = min(run["ok"] for run in runs)
    row["cpu_runs"] = [run["cpu_ms_per_job"] for run in runs]
    return row


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a Markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
