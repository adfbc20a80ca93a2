"""Run the fake provider standalone: ``python -m flux_async.testing --port 8123``.

The first line on stdout is the base URL. The server runs in the foreground until
SIGINT or SIGTERM, then prints a one-line summary of its counters on stderr. For
benchmarks, for example a long-tailed provider that slows down after 500 jobs, limited
to 50 requests per second per key, holding each create's answer 0.2-0.5 s::

    python -m flux_async.testing --latency lognormal:0.3,0.8 \
        --latency-after 500=normal:2,0.5 --rate-limit 50 --create-delay 0.2,0.5
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Sequence

from ._faults import Faults
from ._latency import Latency, parse_latency
from ._png import DEFAULT_MAX_SIDE
from ._server import FakeProvider

_LATENCY_FORMS = "SECONDS, LOW,HIGH, uniform:LOW,HIGH, normal:MEAN,SD or lognormal:MEDIAN,SIGMA"

# Faults a correct client survives without losing or duplicating a job.
TRANSIENT_FAULTS = ("create_429", "create_5xx", "query_5xx", "create_reset", "query_reset")


def _latency(text: str) -> Latency:
    try:
        return parse_latency(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _shift(text: str) -> tuple[int, Latency]:
    count, sep, spec = text.partition("=")
    if not sep or not count.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected N=SPEC (SPEC: {_LATENCY_FORMS}), got {text!r}")
    return int(count), _latency(spec)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _fault(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    names = {field.name for field in dataclasses.fields(Faults)}
    if not sep or name not in names:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME in {sorted(names)}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: {value!r} is not a number") from None


def build_parser() -> argparse.ArgumentParser:
    """Describe the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m flux_async.testing",
        description="Serve a fake ShortAPI/PiAPI/AI/ML API provider until SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--latency",
        type=_latency,
        default=Latency.uniform(0.02, 0.08),
        metavar="SPEC",
        help=f"create-to-ready latency per job, seeded: {_LATENCY_FORMS} (default 0.02,0.08)",
    )
    parser.add_argument(
        "--latency-after",
        type=_shift,
        default=None,
        metavar="N=SPEC",
        help="after the first N jobs, draw latencies from SPEC instead (slows down mid-batch)",
    )
    parser.add_argument(
        "--create-delay",
        type=_latency,
        default=None,
        metavar="SPEC",
        help="hold each create's answer this long after its job was made (same SPEC forms)",
    )
    parser.add_argument(
        "--rate-limit",
        type=_non_negative,
        default=0.0,
        metavar="N",
        help="hidden limit: N requests per second per API key over all keyed routes; "
        "beyond it 429 with Retry-After (default 0: off)",
    )
    parser.add_argument(
        "--rate-limit-burst",
        type=_non_negative,
        default=None,
        metavar="B",
        help="token bucket size for --rate-limit (default: N, one second's worth)",
    )
    parser.add_argument(
        "--image-max-side",
        type=int,
        default=DEFAULT_MAX_SIDE,
        metavar="PX",
        help="scale served PNGs down to PX on the long side, keeping the requested aspect "
        f"ratio; 0 serves the requested size (default {DEFAULT_MAX_SIDE})",
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="P",
        help=f"probability of each transient fault: {', '.join(TRANSIENT_FAULTS)}",
    )
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set one Faults field, e.g. drop_after_accept=0.01 (repeatable)",
    )
    parser.add_argument("--api-key", default=None, help="accept only this key")
    parser.add_argument("--credits", type=float, default=None, help="AI/ML API credits")
    return parser


def faults_from(args: argparse.Namespace) -> Faults:
    """Build the fault schedule from parsed arguments."""
    values: dict[str, object] = dict.fromkeys(TRANSIENT_FAULTS, args.fault_rate)
    if args.create_delay is not None:
        values["create_delay"] = args.create_delay
    values["rate_limit"] = args.rate_limit
    if args.rate_limit_burst is not None:
        values["rate_limit_burst"] = args.rate_limit_burst
    for name, value in args.fault:
        values[name] = int(value) if name == "rate_limit_first_creates" else value
    return Faults(**values)  # type: ignore[arg-type]  # names are checked by _fault


def latency_from(args: argparse.Namespace) -> Latency:
    """Build the latency distribution from parsed arguments."""
    latency: Latency = args.latency
    if args.latency_after is not None:
        after_jobs, then = args.latency_after
        latency = Latency.shift(latency, then, after_jobs=after_jobs)
    return latency


async def serve(fake: FakeProvider) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with fake:
            print(fake.url, flush=True)
            await stop.wait()
            print(
                f"fake provider: {fake.create_attempts} create attempts, "
                f"{len(fake.jobs)} jobs, {sum(fake.polls_per_job.values())} polls, "
                f"{len(fake.callbacks_sent)} callbacks, {fake.lost_responses} lost responses, "
                f"{fake.rejected_429} answered 429",
                file=sys.stderr,
            )
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the server; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        faults = faults_from(args)
        fake = FakeProvider(
            latency=latency_from(args),
            faults=faults,
            seed=args.seed,
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            credits=args.credits,
            image_max_side=args.image_max_side or None,
        )
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(fake))
    return 0


if __name__ == "__main__":
    sys.exit(main())
