"""benchmarks/bound_requests.py: the fewest requests at a given p99 lag, checked by hand cases."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bound_requests  # the benchmarks folder is not a package


def test_evaluate_counts_the_create_and_every_poll_up_to_the_ready_one() -> None:
    requests, p99 = bound_requests.evaluate([1.0, 2.0, 3.0], [0.5, 1.5, 2.5, 3.0])
    # polls: 1, 2, 3, 3 (+ a create each); lags 0.5, 0.5, 0.5, 0.0
    assert requests == (2 + 3 + 4 + 4) / 4
    assert p99 == 0.5


def test_evaluate_continues_past_the_schedule_at_its_last_step() -> None:
    requests, p99 = bound_requests.evaluate([1.0, 2.0], [3.5])
    assert requests == 1 + 4  # polls at 1, 2, 3, 4
    assert p99 == 0.5


def test_the_bound_of_two_point_jobs_is_one_poll_at_each_point() -> None:
    # Half the jobs take 1 s, half 5 s; a lag of at most 0.1 s: poll at 1 s and 5 s.
    latencies = [1.0] * 50 + [5.0] * 50
    requests, p99, times = bound_requests.bound(latencies, 0.1)
    assert requests == 1 + (1 * 50 + 2 * 50) / 100
    assert p99 <= 0.1
    assert len(times) == 2 and abs(times[0] - 1.0) <= 0.1 and abs(times[1] - 5.0) <= 0.1


def test_the_bound_is_never_above_the_loop_and_meets_its_lag() -> None:
    rng = random.Random(3)
    latencies = [rng.uniform(4.0, 12.0) for _ in range(2_000)]
    loop_requests, loop_lag = bound_requests.evaluate([k * 1.0 for k in range(1, 100)], latencies)
    requests, p99, times = bound_requests.bound(latencies, loop_lag)
    assert p99 <= loop_lag
    assert requests <= loop_requests
    # Nothing ends before 4 s, so the bound's schedule does not poll before ~3 s (the loop
    # polls at 1, 2, 3 s): at least two requests fewer per job.
    assert times[0] > 3.0
    assert requests <= loop_requests - 2.0


def test_the_script_prints_its_table() -> None:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bound_requests.main(["--dist", "fast", "--jobs", "2000"]) == 0
    assert "| fast | 3.5" in out.getvalue()
    assert bound_requests.main(["--dist", "nope"]) == 2
