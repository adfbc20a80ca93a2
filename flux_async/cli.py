"""The ``flux-async`` command: generate images with hosted FLUX APIs from a shell.

::

    flux-async generate "a red fox in the snow" --aspect-ratio 16:9 --out out/
    flux-async batch examples/prompts.txt --provider fake --out out/

``--provider fake`` runs the bundled `flux_async.testing.FakeProvider` in-process: no key,
no network. The real providers read their key from ``SHORTAPI_KEY``, ``PIAPI_KEY`` or
``AIMLAPI_KEY``.

Exit status: 0 every input succeeded; 1 something failed, was rejected or skipped; 2 a
usage or configuration error (nothing was sent); 130 interrupted (Ctrl-C).

The command uses only flux_async's public API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import flux_async
from flux_async import (
    AIMLAPI,
    ConfigurationError,
    FluxClient,
    FluxError,
    PiAPI,
    PollPolicy,
    Provider,
    ShortAPI,
    ValidationError,
    Webhooks,
)

from ._cli.batch import BatchResult, run_batch
from ._cli.common import UsageError, one_line
from ._cli.inputs import REQUEST_FIELDS, BatchFile
from ._cli.manifest import FAILED_STATUSES, Manifest, short_url
from ._cli.progress import choose_display, format_seconds, rich_console

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["build_parser", "client_kwargs", "main"]

PROG = "flux-async"
PROVIDERS: dict[str, type[Provider]] = {"shortapi": ShortAPI, "piapi": PiAPI, "aimlapi": AIMLAPI}
FAKE = "fake"
#: Create-to-ready latency of ``--provider fake``, in seconds (``--fake-latency``).
FAKE_LATENCY = (0.2, 1.0)
#: Polling suited to the fake's latency: the real APIs take seconds to a minute.
FAKE_POLL = PollPolicy(wait_first=0.3, wait_initial=0.1, wait_max=1.0)
FAKE_KEY = "fake"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

ClientOpener = Callable[[], AbstractAsyncContextManager[FluxClient]]


# -- command line ------------------------------------------------------------------------------


class _Exit(Exception):
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
        raise _Exit(status)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}")
    return value


def _money(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be an amount >= 0 such as 2.50, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _latency(text: str) -> tuple[float, float]:
    try:
        parts = [float(part) for part in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 0 <= parts[0] <= parts[1] or not math.isfinite(parts[1]):
        raise argparse.ArgumentTypeError(f"must be SECONDS or LOW,HIGH, got {text!r}")
    return parts[0], parts[1]


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a rate from 0 to 1, got {text!r}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object such as \'{"key": "value"}\'')
    return value


def _common_options() -> _Parser:
    common = _Parser(add_help=False)
    group = common.add_argument_group("provider and client")
    group.add_argument(
        "--provider",
        choices=(*PROVIDERS, FAKE),
        default="shortapi",
        help="the API to use (default: shortapi); 'fake' runs a local fake: no key, no network",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help="the provider's API key; better set SHORTAPI_KEY, PIAPI_KEY or AIMLAPI_KEY, as a "
        "key on the command line is visible to other users of this machine",
    )
    group.add_argument("--base-url", metavar="URL", help="the provider's address (a proxy)")
    group.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="each job's deadline from its submission (default 600)",
    )
    group.add_argument("-q", "--quiet", action="store_true", help="show no progress")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log to stderr: -v what the client does, -vv everything",
    )
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
        "--webhook-port", type=_port, metavar="PORT", help="its port (default 0: any free one)"
    )
    # For demos and tests of --provider fake; not worth a line in --help.
    common.add_argument("--fake-latency", type=_latency, help=argparse.SUPPRESS)
    common.add_argument("--fake-faults", type=_rate, help=argparse.SUPPRESS)
    common.add_argument("--fake-seed", type=int, default=0, help=argparse.SUPPRESS)
    return common


_EPILOG = f"""\
Try it with no key and no network:
  {PROG} batch examples/prompts.txt --provider fake --out out/
  {PROG} generate "a red fox in the snow" --provider fake --aspect-ratio 16:9

API keys are read from SHORTAPI_KEY, PIAPI_KEY or AIMLAPI_KEY.
Exit status: 0 all succeeded, 1 something failed or was rejected or skipped,
2 usage or configuration error (nothing was sent), 130 interrupted.
"""


_GENERATE_HELP = f"""\
Generate from one prompt and print the image URLs, one per line (then the saved
files, with --out). The provider checks the parameters before anything is sent.

example:
  {PROG} generate "a red fox" --aspect-ratio 16:9 --num-images 2 --out out/
"""

_BATCH_HELP = f"""\
Generate from every line of FILE, many jobs at once; save the images in --out and
write a manifest with one JSON line per input line:
  {{"index", "line", "prompt", "status", "job_id", "image_urls", "files", "cost",
   "error"}}

FILE holds one prompt per line, or (.jsonl, or its first line starts with '{{')
one JSON request per line: "prompt" and any of image_url, aspect_ratio, width,
height, num_images, seed, steps, guidance, strength, model, extra.
Blank lines and lines starting with # are skipped. A bad line is recorded as
"rejected" and the batch goes on. Ctrl-C stops cleanly: cancelled and unstarted
lines are recorded too (press it twice to stop at once).

example:
  {PROG} batch examples/requests.jsonl --provider fake --out out/
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``flux-async`` command line."""
    parser = _Parser(
        prog=PROG,
        description="Generate images with hosted FLUX APIs (ShortAPI, PiAPI, AI/ML API).",
        epilog=_EPILOG,
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
        description=_GENERATE_HELP,
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
        "--extra", type=_json_object, metavar="JSON", help="provider-specific fields"
    )
    generate.add_argument("--out", metavar="DIR", help="also save the images here")
    generate.set_defaults(run=_generate)

    batch = commands.add_parser(
        "batch",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="generate from a file of prompts; write a manifest",
        description=_BATCH_HELP,
    )
    batch.add_argument("file", metavar="FILE", help="prompts (text) or requests (JSONL)")
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
        type=_positive_int,
        metavar="N",
        help="jobs in flight at once (default: the provider's limit, 256 for ShortAPI)",
    )
    batch.add_argument(
        "--budget",
        type=_money,
        metavar="AMOUNT",
        help="submit no more once charges would pass AMOUNT (the provider's unit, e.g. USD); "
        "the remaining lines are skipped",
    )
    batch.set_defaults(run=_batch)
    return parser


# -- the client --------------------------------------------------------------------------------


def _webhooks(args: argparse.Namespace) -> Webhooks | None:
    """Return the webhook settings for the client, or None when none were asked for."""
    given = {
        name: value
        for name, value in (
            ("public_url", args.webhook_public_url),
            ("host", args.webhook_host),
            ("port", args.webhook_port),
        )
        if value is not None
    }
    return Webhooks(**given) if given else None


def client_kwargs(args: argparse.Namespace, provider: type[Provider]) -> dict[str, Any]:
    """Return `FluxClient`'s keyword arguments (all but the provider) for a command line."""
    fake = args.provider == FAKE
    limits = provider.default_limits
    if fake:
        # Loopback answers in microseconds: the real APIs' pacing would only slow it down.
        limits = dataclasses.replace(limits, max_connections=64, polls_per_second=500.0)
    concurrency = getattr(args, "concurrency", None)
    if concurrency is not None and concurrency > limits.max_jobs_in_flight:
        limits = dataclasses.replace(limits, max_jobs_in_flight=concurrency)
    poll = FAKE_POLL if fake else PollPolicy()
    if args.timeout is not None:
        poll = dataclasses.replace(poll, timeout=args.timeout)
    kwargs: dict[str, Any] = {"limits": limits, "poll": poll}
    webhooks = _webhooks(args)
    if webhooks is not None:
        kwargs["webhooks"] = webhooks
    return kwargs


def _client_opener(args: argparse.Namespace) -> tuple[ClientOpener, str]:
    """Check the provider options; return what opens the client, and the provider's name.

    Raises:
        UsageError: options that cannot work together, or no API key.
        ConfigurationError: the provider refused its key or address.
    """
    if args.provider == FAKE:
        if args.api_key is not None or args.base_url is not None:
            raise UsageError("--api-key and --base-url do not apply to --provider fake")
        return _fake_opener(args), FAKE
    for option in ("fake_latency", "fake_faults"):
        if getattr(args, option) is not None:
            raise UsageError(f"--{option.replace('_', '-')} needs --provider fake")
    provider_class = PROVIDERS[args.provider]
    if args.api_key is None and not os.environ.get(provider_class.env_var, "").strip():
        raise UsageError(
            f"{provider_class.env_var} is not set; pass --api-key or use --provider fake"
        )
    provider = provider_class(args.api_key, base_url=args.base_url)
    kwargs = client_kwargs(args, provider_class)
    return (lambda: FluxClient(provider, **kwargs)), provider.name


def _fake_opener(args: argparse.Namespace) -> ClientOpener:
    from flux_async.testing import FakeProvider, Faults

    kwargs = client_kwargs(args, ShortAPI)
    rate = args.fake_faults or 0.0
    # Transient faults a client survives, plus a few jobs that fail outright.
    faults = Faults(
        create_429=rate,
        query_5xx=rate,
        query_reset=rate / 2,
        create_5xx=rate / 4,  # half of these are 500s: the job ends unknown
        create_reset=rate / 4,  # ends unknown too: the client cannot tell it was not sent
        fail=rate / 4,
        retry_after=1.0,
    )
    latency = args.fake_latency or FAKE_LATENCY

    @contextlib.asynccontextmanager
    async def open_fake() -> AsyncIterator[FluxClient]:
        async with FakeProvider(latency=latency, faults=faults, seed=args.fake_seed) as fake:
            provider = ShortAPI(FAKE_KEY, base_url=fake.url)
            async with FluxClient(provider, **kwargs) as client:
                yield client

    return open_fake


# -- generate ----------------------------------------------------------------------------------


def _generate(args: argparse.Namespace, console: Console | None) -> int:
    opener, provider = _client_opener(args)
    params = {
        name: getattr(args, name) for name in REQUEST_FIELDS[1:] if getattr(args, name) is not None
    }
    return asyncio.run(_generate_one(args, opener, provider, params))


async def _generate_one(
    args: argparse.Namespace, opener: ClientOpener, provider: str, params: dict[str, Any]
) -> int:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with opener() as client:
        job = await client.submit(args.prompt, **params)
        if not args.quiet and sys.stderr.isatty():
            print(f"{PROG}: job {job.id} submitted to {provider}; waiting", file=sys.stderr)
        try:
            generation = await job
        except asyncio.CancelledError:
            print(
                f"{PROG}: job {job.id} was submitted to {provider} and may still finish there "
                "(and be charged)",
                file=sys.stderr,
            )
            raise
        for image in generation.images:
            print(short_url(image.url), flush=True)
        if args.out is not None:
            for path in await client.download(generation, args.out):
                print(path, flush=True)
    if not args.quiet:
        count = len(generation.images)
        cost = "unknown" if generation.cost is None else format(generation.cost, "f")
        print(
            f"{PROG}: job {generation.job_id}: {count} image{'s' * (count != 1)}, cost {cost}, "
            f"{format_seconds(loop.time() - started)}",
            file=sys.stderr,
        )
    return EXIT_OK


# -- batch -------------------------------------------------------------------------------------


def _batch(args: argparse.Namespace, console: Console | None) -> int:
    opener, _ = _client_opener(args)
    out = Path(args.out)
    manifest_path = Path(args.manifest) if args.manifest else out / "manifest.jsonl"
    try:
        source = BatchFile(Path(args.file), format=args.format)
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
            manifest = Manifest(manifest_path)
        except OSError as exc:
            where = exc.filename or manifest_path
            raise UsageError(f"cannot write {where}: {exc.strerror or exc}") from exc
        result = asyncio.run(
            run_batch(
                opener,
                source.lines(),
                total=source.total,
                manifest=manifest,
                out=out,
                concurrency=args.concurrency,
                budget=args.budget,
                make_display=lambda tally: choose_display(tally, quiet=args.quiet, console=console),
            )
        )
    finally:
        source.close()
    _print_summary(result, sys.stdout)
    if result.interrupted:
        return EXIT_INTERRUPTED
    tally = result.tally
    return EXIT_OK if tally.statuses["succeeded"] == tally.done else EXIT_FAILED


def _print_summary(result: BatchResult, stream: IO[str]) -> None:
    tally = result.tally
    statuses = tally.statuses
    separate = ("cancelled", "not_started") if result.interrupted else ()
    failures = {
        status: n
        for status, n in sorted(statuses.items())
        if status in FAILED_STATUSES and status not in separate
    }
    failed = f"{sum(failures.values())} failed"
    if set(failures) - {"failed"}:
        failed += f" ({', '.join(f'{n} {status}' for status, n in failures.items())})"
    parts = [
        f"{statuses['succeeded']} succeeded",
        failed,
        f"{statuses['skipped']} skipped",
        f"{statuses['rejected']} rejected",
    ]
    parts += [f"{statuses[status]} {status.replace('_', ' ')}" for status in separate]
    when = (
        f"interrupted after {format_seconds(tally.elapsed)}"
        if result.interrupted
        else f"{tally.done} lines in {format_seconds(tally.elapsed)}"
    )
    print(f"{PROG}: {when}: {', '.join(parts)}; cost {format(tally.cost, 'f')}", file=stream)
    print(f"manifest: {result.manifest}", file=stream)
    print(f"images:   {result.out}{os.sep}", file=stream)


# -- main --------------------------------------------------------------------------------------


def _configure_logging(verbosity: int, console: Console | None) -> Callable[[], None]:
    """Send the ``flux_async`` logger to stderr; return what undoes it."""
    if verbosity <= 0:
        return lambda: None
    logger = logging.getLogger("flux_async")
    handler: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s %(name)s: %(message)s"))
    previous = logger.level
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)
    logger.addHandler(handler)

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    return restore


def _fail(message: object) -> None:
    print(f"{PROG}: {one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flux-async`` command line; return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except _Exit as exc:
        return exc.status
    except UsageError as exc:
        _fail(exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    console = None if args.quiet else rich_console()
    restore_logging = _configure_logging(args.verbose, console)
    try:
        status: int = args.run(args, console)
        return status
    except (UsageError, ValidationError, ConfigurationError) as exc:
        _fail(exc)
        return EXIT_USAGE
    except FluxError as exc:
        _fail(exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other shell tools do.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        _fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else exc)
        return EXIT_FAILED
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
        _fail(
            f"unexpected error: {type(exc).__name__}: {one_line(exc, limit=300)}"
            + ("" if args.verbose else " (run with -v for details)")
        )
        return EXIT_FAILED
    finally:
        restore_logging()


if __name__ == "__main__":
    sys.exit(main())
