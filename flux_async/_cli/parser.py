"""The ``flux-async`` command line's argparse parser. Its option types are in
``option_types.py``, its help texts in ``help_texts.py``."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

import flux_async

from .common import PROG, UsageError
from .help_texts import BATCH_HELP, EPILOG, GENERATE_HELP, WORKER_HELP
from .option_types import json_object, latency, money, per_second, port, positive_int, rate, seconds

__all__ = ["FAKE", "PROVIDER_NAMES", "Exit", "build_parser"]

PROVIDER_NAMES = ("shortapi", "piapi", "aimlapi")
FAKE = "fake"


class Exit(Exception):
    """argparse finished early (``--help``, ``--version``) with this status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that reports errors in one line and never calls `sys.exit`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr, end="")
        raise Exit(status)


def _common_options(*, webhooks: bool = True) -> _Parser:
    common = _Parser(add_help=False)
    group = common.add_argument_group("provider and client")
    group.add_argument(
        "--provider",
        choices=(*PROVIDER_NAMES, FAKE),
        default="shortapi",
        help="the API to use (default: shortapi); 'fake' runs a local fake: no key, no network",
    )
    group.add_argument(
        "--fake-as",
        choices=PROVIDER_NAMES,
        metavar="PROVIDER",
        help="with --provider fake: which API's wire format to speak, "
        "shortapi (default), piapi or aimlapi",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help="the provider's API key; better set SHORTAPI_KEY, PIAPI_KEY or AIMLAPI_KEY, as a "
        "key on the command line is visible to other users of this machine",
    )
    group.add_argument("--base-url", metavar="URL", help="the provider's address (a proxy)")
    group.add_argument("-q", "--quiet", action="store_true", help="show no progress")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log to stderr: -v each job's life (flux_async's logs), -vv more detail",
    )
    polling = common.add_argument_group("polling and deadlines")
    polling.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help="each job's deadline from its submission (default 600)",
    )
    polling.add_argument(
        "--first-poll",
        type=seconds,
        metavar="SECONDS",
        help="when a job's status is first checked (default: the provider's typical latency)",
    )
    polling.add_argument(
        "--poll-interval",
        type=seconds,
        metavar="SECONDS",
        help="then check every SECONDS (default: from 0.5 s, backing off to 15 s)",
    )
    if webhooks:
        _webhook_options(common)
    # For demos and tests of --provider fake; not worth a line in --help.
    common.add_argument("--fake-latency", type=latency, help=argparse.SUPPRESS)
    common.add_argument("--fake-faults", type=rate, help=argparse.SUPPRESS)
    common.add_argument("--fake-seed", type=int, default=0, help=argparse.SUPPRESS)
    return common


def _webhook_options(common: _Parser) -> None:
    hooks = common.add_argument_group(
        "webhooks",
        "Receive the provider's callbacks instead of polling (ShortAPI, PiAPI): any of these "
        "options starts a receiver for the run. With --provider fake, --webhook-port 0 is "
        "enough.",
    )
    hooks.add_argument(
        "--webhook-public-url",
        metavar="URL",
        help="the address the provider calls, as the outside world sees it "
        "(default: the receiver's own http://HOST:PORT/flux-webhooks)",
    )
    hooks.add_argument(
        "--webhook-host", metavar="HOST", help="where the receiver listens (127.0.0.1)"
    )
    hooks.add_argument(
        "--webhook-port", type=port, metavar="PORT", help="its port (default 0: any free one)"
    )
    hooks.add_argument(
        "--orphan-window",
        type=seconds,
        metavar="SECONDS",
        help="how long a create whose answer was lost waits for its callback before the "
        "job ends 'unknown' (default 120)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``flux-async`` command line."""
    parser = _Parser(
        prog=PROG,
        description="Generate images with hosted FLUX APIs (ShortAPI, PiAPI, AI/ML API).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {flux_async.__version__}")
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    common = _common_options()

    generate = commands.add_parser(
        "generate",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="generate from one prompt; print the image URLs",
        description=GENERATE_HELP,
    )
    generate.add_argument("prompt", help="what to draw")
    params = generate.add_argument_group("generation parameters")
    params.add_argument("--image-url", metavar="URL", help="start from this image")
    params.add_argument("--aspect-ratio", metavar="W:H", help="e.g. 16:9")
    params.add_argument("--width", type=int, metavar="PX")
    params.add_argument("--height", type=int, metavar="PX")
    params.add_argument("--num-images", type=int, metavar="N")
    params.add_argument("--seed", type=int)
    params.add_argument("--steps", type=int)
    params.add_argument("--guidance", type=float)
    params.add_argument("--strength", type=float, help="how far to move from --image-url")
    params.add_argument("--model", metavar="M", help="e.g. schnell or dev (ShortAPI)")
    params.add_argument(
        "--extra", type=json_object, metavar="JSON", help="provider-specific fields"
    )
    generate.add_argument("--out", metavar="DIR", help="also save the images here")

    batch = commands.add_parser(
        "batch",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="generate from a file of prompts; write a manifest",
        description=BATCH_HELP,
    )
    batch.add_argument(
        "file", metavar="FILE", help="prompts (text) or requests (JSONL); '-' for stdin"
    )
    batch.add_argument(
        "--format",
        choices=("auto", "text", "jsonl"),
        default="auto",
        help="how to read FILE (default: auto)",
    )
    batch.add_argument("--out", metavar="DIR", default="out", help="where images go (out/)")
    batch.add_argument(
        "--manifest", metavar="PATH", help="where the manifest goes (DIR/manifest.jsonl)"
    )
    batch.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="jobs in flight at once (default 1,000, or the provider's ceiling; the client "
        "discovers how many the provider takes)",
    )
    batch.add_argument(
        "--budget",
        type=money,
        metavar="AMOUNT",
        help="submit no more once charges would pass AMOUNT (the provider's unit, e.g. USD); "
        "the remaining lines are skipped",
    )
    batch.add_argument(
        "--price-per-job",
        type=money,
        metavar="AMOUNT",
        help="what one job costs, for --budget where the provider publishes no price "
        "(PiAPI, AI/ML API); without it, jobs go one at a time until the first charge is known",
    )
    resume = batch.add_argument_group(
        "journal and resume",
        "Every job is recorded in a journal (SQLite) before its create is sent, so a batch "
        "stopped at any moment (Ctrl-C, kill -9, a crash) can be run again with --resume: "
        "finished lines are not sent again, jobs the provider accepted are followed to their "
        "end, and the manifest keeps one line per input.",
    )
    resume.add_argument(
        "--journal",
        metavar="PATH",
        help="the journal file (default: DIR/journal.sqlite, i.e. the journal is on, inside --out)",
    )
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue the batch recorded in the journal (required to run again into an --out "
        "that already has a journal or a manifest); give the same FILE",
    )
    resume.add_argument(
        "--resubmit-unknown",
        action="store_true",
        help="with --resume: send again the lines whose earlier create may or may not have "
        "reached the provider (ended 'unknown'); this MAY PAY TWICE for them",
    )
    resume.add_argument(
        "--new-batch",
        action="store_true",
        help="start a new batch in an existing journal instead of resuming it (the earlier "
        "manifest is kept, renamed); with --redis, queue the inputs again as a new batch",
    )
    _redis_batch_options(batch)
    _worker_parser(commands)
    return parser


def _redis_options(
    parser: argparse.ArgumentParser, what: str | None, *, required: bool
) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("Redis", what)
    group.add_argument(
        "--redis",
        metavar="URL",
        required=required,
        help="the Redis server, e.g. redis://localhost:6379/0 (rediss:// for TLS; a password "
        "as redis://:PASSWORD@host:6379/0)",
    )
    group.add_argument(
        "--namespace",
        metavar="NS",
        default="flux",
        help="prefix of the Redis keys, to keep separate queues on one server (default flux)",
    )
    return group


def _redis_batch_options(batch: argparse.ArgumentParser) -> None:
    group = _redis_options(
        batch,
        "With --redis the inputs are queued on Redis and generated by 'worker' processes "
        "(any number, any machines); this command collects their outcomes into the same "
        "manifest. The batch id is a digest of the inputs, so running the same command again "
        "only collects: nothing is queued or paid twice. The provider, polling and limits are "
        "the workers' options.",
        required=False,
    )
    group.add_argument(
        "--batch-id",
        metavar="ID",
        help="the batch's id in Redis (default: a digest of the inputs); collects the batch "
        "if Redis has it, otherwise queues the inputs under this id",
    )


def _worker_parser(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        parents=[_common_options(webhooks=False)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="generate the inputs of batches queued on Redis",
        description=WORKER_HELP,
    )
    group = _redis_options(worker, None, required=True)
    group.add_argument(
        "--name",
        metavar="NAME",
        help="this worker's name in Redis, unique among live workers (default HOST-PID)",
    )
    worker.add_argument("--out", metavar="DIR", default="out", help="where images are saved (out/)")
    worker.add_argument(
        "--no-download",
        action="store_true",
        help="save no images (the manifest still has their URLs)",
    )
    worker.add_argument(
        "--concurrency",
        type=positive_int,
        default=64,
        metavar="N",
        help="inputs this worker works on at once (default 64)",
    )
    worker.add_argument(
        "--min-idle",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long the inputs of a silent worker wait before another takes them over "
        "(default 30)",
    )
    worker.add_argument(
        "--exit-when-idle",
        type=seconds,
        metavar="SECONDS",
        help="stop once nothing was queued or in hand (in any worker) for SECONDS",
    )
    shared = worker.add_argument_group(
        "limits shared by every worker of one provider account (kept in Redis)",
        "N workers with one API key together stay under these, not N times them. Give the "
        "same values to every worker.",
    )
    shared.add_argument(
        "--shared-requests-per-second",
        type=per_second,
        metavar="RATE",
        help="all requests (creates and polls)",
    )
    shared.add_argument(
        "--shared-creates-per-second", type=per_second, metavar="RATE", help="creates"
    )
    shared.add_argument(
        "--shared-polls-per-second", type=per_second, metavar="RATE", help="status queries"
    )
    shared.add_argument(
        "--shared-jobs-in-flight",
        type=positive_int,
        metavar="N",
        help="jobs created and not yet finished",
    )
