"""Run every benchmark in turn: batch throughput, memory per job, webhook mode.

Usage::

    python benchmarks/run_all.py            # the full runs (about 15 minutes on 2 cores)
    python benchmarks/run_all.py --smoke    # tiny sizes, a few seconds each
    python benchmarks/run_all.py --repeat 3 # bench_batch: median of 3 runs per contender
    python benchmarks/run_all.py --dist all # bench_batch on every latency distribution
    python benchmarks/run_all.py --code /tmp/base  # measure the flux_async in /tmp/base

Each benchmark prints its own table; this script stops at the first one that fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; return the first non-zero exit status, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (for CI)")
    parser.add_argument("--repeat", type=int, default=1, help="bench_batch runs per contender")
    parser.add_argument("--dist", default="uniform", help="bench_batch's latency distributions")
    parser.add_argument("--code", default=None, metavar="DIR", help="import flux_async from DIR")
    args = parser.parse_args(argv)
    common = ["--smoke"] if args.smoke else []
    if args.code is not None:
        common += ["--code", args.code]
    batch = ["--scenario", "both", "--repeat", str(args.repeat), "--dist", args.dist]
    commands = [
        ["bench_batch.py", *batch, *common],
        ["bench_memory.py", *common],
        ["bench_webhooks.py", "--scenario", "both", *common],
    ]
    for script, *options in commands:
        print(f"\n$ python benchmarks/{script} {' '.join(options)}".rstrip(), flush=True)
        status = subprocess.run([sys.executable, str(HERE / script), *options], check=False)
        if status.returncode != 0:
            return status.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
