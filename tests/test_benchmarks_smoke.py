"""The benchmarks run end to end at tiny sizes (no timing is asserted).

Each smoke run starts the fake and one client per contender as subprocesses (4-6 s each
on 2 cores), hence ``slow``; CI runs them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(script: str, *args: str) -> str:
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-4000:]
    return finished.stdout


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_bench_batch_smoke() -> None:
    output = run_benchmark("bench_batch.py", "--smoke", "--contenders", "flux,loop")
    assert "| scenario | contender | wall s | CPU ms/job |" in output
    assert "| lag p99 ms | 429s | max RSS MB |" in output
    assert "| smoke | flux |" in output
    assert "| smoke | loop |" in output
    assert "flux/loop: CPU per job" in output
    assert "  flux-same:" not in output  # only the contenders asked for


@pytest.mark.slow  # a subprocess, if a short one
def test_bench_batch_refuses_unknown_contenders() -> None:
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_batch.py"), "--contenders", "loop+journal"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 2
    assert "unknown contenders ['loop+journal']" in finished.stderr


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_bench_memory_smoke() -> None:
    output = run_benchmark("bench_memory.py", "--smoke")
    assert "| part | how | outstanding jobs | traced bytes/job | RSS bytes/job |" in output
    assert "| e2e |" in output
    assert "| direct |" in output


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_bench_webhooks_smoke() -> None:
    output = run_benchmark("bench_webhooks.py", "--smoke")
    assert "| scenario | contender | wall s | CPU ms/job | req/job |" in output
    assert "| smoke | flux |" in output and "| smoke | webhook-loop |" in output
    assert "| smoke | flux-trusted |" in output
    assert "smoke flux: 2.00 requests per job (target <= 2: met)" in output
