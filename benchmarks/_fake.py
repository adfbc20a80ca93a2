"""Run the fake provider in its own process for the benchmarks (a helper, not a benchmark).

The fake is started with ``python -m flux_async.testing --port 0`` and prints its URL on
the first line of stdout. Its counters are read over HTTP (``GET /_fake/stats``) with the
standard library, so the orchestrating process never imports aiohttp or flux_async.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["FakeProcess", "code_under_test", "run_child"]

_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0


class FakeProcess:
    """A `flux_async.testing` server in a child process, stopped with SIGTERM.

    ``cpu``: pin the server to this CPU (Linux), so that it and the client under test do
    not trade places between cores from run to run.
    """

    def __init__(
        self,
        *,
        latency: str,
        seed: int = 0,
        extra_args: tuple[str, ...] = (),
        cpu: int | None = None,
    ) -> None:
        self._args = [
            sys.executable,
            "-m",
            "flux_async.testing",
            "--port",
            "0",
            "--seed",
            str(seed),
            "--latency",
            latency,
            *extra_args,
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
        )
        self._process = process
        if self._pin is not None:
            os.sched_setaffinity(process.pid, {self._pin})
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], _START_TIMEOUT)
        line = process.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            self._stop()
            raise RuntimeError(f"the fake provider did not start (first line: {line!r})")
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
        url = f"{self.url}/_fake/stats?detail={1 if detail else 0}"
        with urllib.request.urlopen(url, timeout=60) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def _stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def code_under_test() -> str:
    """Name the flux_async being measured: its version and where it was imported from."""
    import flux_async

    return f"flux_async {flux_async.__version__} from {Path(flux_async.__file__).parent}"


def run_child(name: str, command: list[str], *, cpu: int | None, time_limit: float) -> Any:
    """Run one contender's child process (pinned to ``cpu``); return its last JSON line."""
    if cpu is not None:
        command = [*command, "--cpu", str(cpu)]
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=time_limit, check=False
    )
    if finished.returncode != 0:
        raise RuntimeError(f"{name} exited {finished.returncode}:\n{finished.stderr[-4000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])
