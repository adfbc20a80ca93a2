"""``flux-async generate``: one prompt, its image URLs on stdout, its files with ``--out``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client import ClientOpener, client_opener
from .common import EXIT_OK, PROG, UsageError
from .inputs import REQUEST_FIELDS
from .manifest import short_url
from .progress import format_seconds

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["check_out_dir", "generate_command"]


def check_out_dir(out: Path) -> None:
    """Create ``out`` if need be and make sure files can be written there.

    Raises:
        UsageError: it is not a directory, or cannot be created or written to.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {out}: Permission denied")


def generate_command(args: argparse.Namespace, console: Console | None) -> int:
    """Run ``flux-async generate``; return the exit status.

    Raises:
        UsageError: the options or ``--out`` cannot work (checked before anything is sent).
    """
    opener, provider = client_opener(args)
    if args.out is not None:
        check_out_dir(Path(args.out))
    params = {
        name: getattr(args, name)
        for name in REQUEST_FIELDS
        if name != "prompt" and getattr(args, name, None) is not None
    }
    return asyncio.run(_generate_one(args, opener, provider, params))


async def _generate_one(
    args: argparse.Namespace, opener: ClientOpener, provider: str, params: dict[str, Any]
) -> int:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with opener() as client:
        # A prompt's surrounding whitespace is never sent (a shell quote takes it in easily).
        job = await client.submit(args.prompt.strip(), **params)
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
