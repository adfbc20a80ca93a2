"""Two revisions of flux_async back to back: CPU per request and bytes per outstanding job.

What is measured: ``bench_batch.py`` (the ``small`` scenario by default; contenders
``flux,flux-same,loop``) and ``bench_memory.py``, run alternately against two copies of
the package, ``--before DIR`` and ``--after DIR`` (default: this checkout), ``--repeat``
times each, in alternating order (before, after, after, before, ...). Only the client
processes change: the fake provider and the hand-written loop come from this checkout in
every run, so they are the same yardstick for both revisions (see ``_harness.child_env``).

Against what: each revision's numbers are compared with the other's, and the difference
with the run-to-run noise measured in the same session: the spread (max - min) of every
number across the runs of one revision, and the spread of the loop, which is the same code
in every run. The redesign's rule (issue 10): neither CPU per request nor bytes per job may
get worse by more than that noise.

Typical use (the original code in a git worktree)::

    git worktree add /tmp/base 1b2c60c
    python benchmarks/compare_revisions.py --before /tmp/base --repeat 3
    python benchmarks/compare_revisions.py --before /tmp/base --smoke    # a quick check

To keep concurrent commits from changing the "after" code mid-run, measure a snapshot:
``git archive HEAD flux_async | tar -x -C /tmp/after`` and ``--after /tmp/after``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import HERE, code_under_test, print_table  # the folder is on sys.path

BATCH_NUMBERS = ("cpu_us_per_request", "cpu_ms_per_job", "requests_per_job", "lag_p99_ms")
MEMORY_NUMBERS = ("traced_bytes_per_job", "rss_bytes_per_job")


def run_script(script: str, options: list[str], code: str) -> list[dict[str, Any]]:
    """Run one benchmark for the package in ``code``; return its ``--json`` rows."""
    with tempfile.TemporaryDirectory(prefix="compare-") as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, str(HERE / script), *options, "--code", code, "--json", str(out)]
        print(f"  $ {' '.join(command[1:])}", file=sys.stderr, flush=True)
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
        if finished.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"{script} exited {finished.returncode}:\n{finished.stdout[-2000:]}"
                f"{finished.stderr[-4000:]}"
            )
        rows: list[dict[str, Any]] = json.loads(out.read_text())
    return rows


def spread(values: list[float]) -> float:
    """Return max - min (0 for one value)."""
    return max(values) - min(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    """Run both revisions alternately and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--before", required=True, metavar="DIR", help="the older package")
    parser.add_argument(
        "--after",
        default=str(HERE.parent),
        metavar="DIR",
        help="the newer package (default: this checkout)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per revision (default 3)")
    parser.add_argument("--scenario", choices=("small", "large"), default="small")
    parser.add_argument("--jobs", type=int, default=None, help="custom bench_batch jobs")
    parser.add_argument("--concurrency", type=int, default=None, help="custom jobs in flight")
    parser.add_argument("--contenders", default="flux,flux-same,loop")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (checks the wiring)")
    parser.add_argument("--no-memory", action="store_true", help="skip bench_memory.py")
    args = parser.parse_args(argv)

    batch = ["--contenders", args.contenders]
    memory: list[str] = []
    if args.smoke:
        batch.append("--smoke")
        memory.append("--smoke")
    elif args.jobs is not None or args.concurrency is not None:
        batch += ["--jobs", str(args.jobs or 2_000), "--concurrency", str(args.concurrency or 200)]
    else:
        batch += ["--scenario", args.scenario]
    revisions = {"before": args.before, "after": args.after}
    print(f"compare_revisions ({time.strftime('%Y-%m-%d %H:%M')}), {args.repeat} run(s) each:")
    for name, code in revisions.items():
        print(f"  {name}: {code_under_test(code)}")
    batch_runs: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in revisions}
    memory_runs: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in revisions}
    order = list(revisions)
    for repeat in range(args.repeat):
        for name in order if repeat % 2 == 0 else order[::-1]:
            print(f"run {repeat + 1}/{args.repeat}: {name}", file=sys.stderr, flush=True)
            batch_runs[name].append(run_script("bench_batch.py", batch, revisions[name]))
            if not args.no_memory:
                memory_runs[name].append(run_script("bench_memory.py", memory, revisions[name]))

    rows: list[list[str]] = []
    noise: dict[tuple[str, str], float] = {}
    medians: dict[tuple[str, str, str], float] = {}
    contenders = [row["contender"] for row in batch_runs["before"][0]]
    for contender in contenders:
        for name in revisions:
            per_run = [
                next(row for row in run if row["contender"] == contender)
                for run in batch_runs[name]
            ]
            cells = [f"bench_batch {contender}", name]
            for key in BATCH_NUMBERS:
                values = [row[key] for row in per_run]
                medians[(contender, name, key)] = statistics.median(values)
                noise[(contender, key)] = max(noise.get((contender, key), 0.0), spread(values))
                cells.append(f"{statistics.median(values):.2f} (±{spread(values) / 2:.2f})")
            rows.append(cells)
    print()
    print_table(("what", "revision", *BATCH_NUMBERS), rows)
    print("\nmedian (± half the spread across runs); the loop is the same code in every run.")
    if "loop" in contenders:
        loop_values = [
            row["cpu_us_per_request"]
            for name in revisions
            for run in batch_runs[name]
            for row in run
            if row["contender"] == "loop"
        ]
        print(
            f"noise: the loop's CPU µs/req ranged {min(loop_values):.0f}-{max(loop_values):.0f} "
            f"over {len(loop_values)} runs ({100 * spread(loop_values) / min(loop_values):.0f}%)"
        )
    for contender in contenders:
        if contender == "loop":
            continue
        before = medians[(contender, "before", "cpu_us_per_request")]
        after = medians[(contender, "after", "cpu_us_per_request")]
        print(
            f"{contender}: CPU µs/req after/before {after / before:.2f}x "
            f"({after - before:+.0f} µs; largest run-to-run spread of one revision "
            f"{noise[(contender, 'cpu_us_per_request')]:.0f} µs)"
        )

    if not args.no_memory:
        rows = []
        parts = [row["part"] for row in memory_runs["before"][0]]
        for part in parts:
            for name in revisions:
                per_run = [
                    next(row for row in run if row["part"] == part) for run in memory_runs[name]
                ]
                cells = [f"bench_memory {part}", name, f"{per_run[0]['jobs']:,}"]
                for key in MEMORY_NUMBERS:
                    values = [row[key] for row in per_run]
                    medians[(part, name, key)] = statistics.median(values)
                    cells.append(f"{statistics.median(values):,.0f} (±{spread(values) / 2:,.0f})")
                rows.append(cells)
        print()
        print_table(("what", "revision", "outstanding jobs", *MEMORY_NUMBERS), rows)
        for part in parts:
            before = medians[(part, "before", "traced_bytes_per_job")]
            after = medians[(part, "after", "traced_bytes_per_job")]
            print(f"{part}: traced bytes/job after - before: {after - before:+,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
