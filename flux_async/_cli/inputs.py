"""Batch input: the prompt file (read with `flux_async.read_prompts`) and unusable lines.

The file is read lazily, one line at a time, so a file of any length costs little memory;
opening it reads it once, quickly, to count the inputs, pick the format and make sure it is
text. ``-`` is standard input (copied to a temporary file as it is read).
"""

from __future__ import annotations

import sys
from typing import Literal

import msgspec

from flux_async import GenerationRequest, PromptFile, ValidationError, read_prompts

from .common import UsageError

__all__ = ["REQUEST_FIELDS", "STDIN", "BadLine", "open_prompts"]

#: The fields of a request (a JSONL line's keys; ``generate``'s options after the prompt).
REQUEST_FIELDS = tuple(field.name for field in msgspec.structs.fields(GenerationRequest))
STDIN = "-"


class BadLine:
    """Stands in for an unusable line in `FluxClient.generate_many`.

    It is none of the accepted input types, so it comes back as a ``rejected`` outcome,
    in its place, and every line keeps exactly one outcome.
    """

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def __repr__(self) -> str:
        return f"BadLine({self.problem!r})"


def open_prompts(name: str, *, format: Literal["auto", "text", "jsonl"]) -> PromptFile:
    """Open a batch's input (``-``: standard input) and check it has prompts.

    Raises:
        UsageError: it cannot be read, is not text, or has no prompts.
    """
    try:
        if name == STDIN:
            prompts = read_prompts(sys.stdin.buffer, format=format)
        else:
            prompts = read_prompts(name, format=format)
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        raise UsageError(str(exc)) from exc
    if prompts.count == 0:
        prompts.close()
        where = "standard input" if name == STDIN else name
        raise UsageError(
            f"{where} has no prompts (blank lines and lines starting with # are skipped)"
        )
    return prompts
