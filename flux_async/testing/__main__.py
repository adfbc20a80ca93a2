"""Run the fake provider standalone: ``python -m flux_async.testing --port 8123``.

The first line on stdout is the base URL. The server runs in the foreground until
SIGINT or SIGTERM, then prints a one-line summary of its counters on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Sequence

from ._core import Latency
from ._faults import Faults
from ._server import FakeProvider

# Faults a correct client survives without losing or duplicating a job.
TRANSIENT_FAULTS = ("create_429", "create_5xx", "query_5xx", "create_reset", "query_reset")


def _latency(text: str) -> Latency:
    parts = [float(part) for part in text.split(",")]
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise argparse.ArgumentTypeError("latency is SECONDS or LOW,HIGH")


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
        default=(0.02, 0.08),
        metavar="SECONDS|LOW,HIGH",
        help="create-to-ready latency (default 0.02,0.08)",
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
    values: dict[str, float | int] = dict.fromkeys(TRANSIENT_FAULTS, args.fault_rate)
    for name, value in args.fault:
        values[name] = int(value) if name == "rate_limit_first_creates" else value
    return Faults(**values)  # type: ignore[arg-type]  # names are checked by _fault


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
                f"{len(fake.callbacks_sent)} callbacks, {fake.lost_responses} lost responses",
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
            latency=args.latency,
            faults=faults,
            seed=args.seed,
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            credits=args.credits,
        )
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(fake))
    return 0


if __name__ == "__main__":
    sys.exit(main())
