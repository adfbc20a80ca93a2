"""The ``flux-async`` command: generate images with hosted FLUX APIs from a shell.

::

    flux-async generate "a red fox in the snow" --aspect-ratio 16:9 --out out/
    flux-async batch prompts.txt --provider fake --out out/
    flux-async worker --redis redis://host:6379/0 --provider piapi --out images/  # any number
    flux-async batch prompts.txt --redis redis://host:6379/0   # queued for the workers

``--provider fake`` runs the bundled `flux_async.testing.FakeProvider` in-process: no key,
no network (``--fake-as piapi`` or ``aimlapi`` to speak another API's wire format). The real
providers read their key from ``SHORTAPI_KEY``, ``PIAPI_KEY`` or ``AIMLAPI_KEY``.

Exit status: 0 every input succeeded; 1 something failed, was rejected or skipped; 2 a
usage, input or configuration error (nothing was sent); 130 interrupted (Ctrl-C).

The command uses only flux_async's public API (and `flux_async.testing` for the fake).
Its parts: `parser` (options and help), `client` (the client a command runs with),
`generate`, `batch` (with `inputs`, `manifest` and `progress`), and on Redis
`redis_batch` (``batch --redis``) and `worker` (with `redis_link`), imported only when used.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from flux_async import ConfigurationError, FluxError, ValidationError

from .batch import batch_command
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, PROG, UsageError, one_line
from .generate import generate_command
from .parser import Exit, build_parser
from .progress import rich_console

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["main"]

Command = Callable[[argparse.Namespace, "Console | None"], int]


def _batch(args: argparse.Namespace, console: Console | None) -> int:
    from .redis_batch import check_batch_options, redis_batch_command

    check_batch_options(args)
    if args.redis is not None:
        return redis_batch_command(args, console)
    return batch_command(args, console)


def _worker(args: argparse.Namespace, console: Console | None) -> int:
    from .worker import worker_command

    return worker_command(args, console)


COMMANDS: dict[str, Command] = {"generate": generate_command, "batch": _batch, "worker": _worker}

#: The loggers ``-vv`` adds to flux_async's own (never aiohttp's server or access logs,
#: which could show a webhook's path).
_MORE_LOGGERS = ("aiohttp.client", "asyncio")


def _configure_logging(verbosity: int, console: Console | None) -> Callable[[], None]:
    """Send flux_async's logs to stderr; return what undoes it.

    ``-v``: every record of the ``flux_async`` logger tree (each job's life is logged at
    DEBUG, notable events at INFO and above). ``-vv``: the same with times and logger
    names, plus aiohttp's client and asyncio's own logs. Without ``-v`` nothing is set up
    (the library's records go nowhere).
    """
    if verbosity <= 0:
        return lambda: None
    handler: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, show_time=verbosity > 1)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        layout = f"{PROG}: %(levelname)s %(name)s: %(message)s"
        if verbosity > 1:
            layout = "%(asctime)s " + layout
        handler.setFormatter(logging.Formatter(layout))
    handler.setLevel(logging.DEBUG)
    names = ("flux_async", *(_MORE_LOGGERS if verbosity > 1 else ()))
    loggers = [logging.getLogger(name) for name in names]
    previous = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)

    def restore() -> None:
        for logger, level in previous:
            logger.removeHandler(handler)
            logger.setLevel(level)

    return restore


def _fail(message: object) -> None:
    print(f"{PROG}: {one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flux-async`` command line; return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        # The command line as given, for the command that resumes a batch.
        args.argv = list(sys.argv[1:] if argv is None else argv)
    except Exit as exc:
        return exc.status
    except UsageError as exc:
        _fail(exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    console = None if args.quiet else rich_console()
    restore_logging = _configure_logging(args.verbose, console)
    try:
        return COMMANDS[args.command](args, console)
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
