"""Batch input files: one prompt per line, or one JSON request object per line (JSONL).

The file is read lazily, one line at a time, so a file of any length costs little memory.
A quick first pass counts the inputs (for progress and ETA) and picks the format.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from .common import UsageError

__all__ = ["REQUEST_FIELDS", "BadLine", "BatchFile", "Format", "InputLine"]

Format = Literal["auto", "text", "jsonl"]

#: The keys a JSONL request object may have (the parameters of `FluxClient.submit`).
REQUEST_FIELDS = (
    "prompt",
    "image_url",
    "aspect_ratio",
    "width",
    "height",
    "num_images",
    "seed",
    "steps",
    "guidance",
    "strength",
    "model",
    "extra",
)
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class InputLine:
    """One input of a batch: a line of the file that is neither blank nor a comment.

    Attributes:
        line: the line number in the file, from 1.
        prompt: the prompt, when the line has one (for the manifest).
        item: what `FluxClient.generate_many` is given: a prompt or a request mapping.
        problem: why the line cannot be used (``"line 3: not valid JSON: ..."``), or None.
    """

    line: int
    prompt: str | None
    item: str | dict[str, Any] | None
    problem: str | None = None


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


def _skipped(text: str) -> bool:
    stripped = text.strip()
    return not stripped or stripped.startswith("#")


class BatchFile:
    """An open batch file: its format, how many inputs it has, and its lines.

    Opening it reads it once, quickly, to count the inputs; `lines` then reads it again,
    lazily. Blank lines and lines starting with ``#`` are skipped in both formats.

    Raises:
        OSError: the file cannot be opened or read.
        UsageError: it holds no inputs.
    """

    def __init__(self, path: Path, *, format: Format = "auto") -> None:
        self.path = path
        # One handle for both passes: a file deleted or replaced mid-batch still reads.
        self._file: IO[bytes] = path.open("rb")
        try:
            self.format, self.total = self._scan(format)
        except BaseException:
            self._file.close()
            raise
        if self.total == 0:
            self._file.close()
            raise UsageError(
                f"{path} has no prompts (blank lines and lines starting with # are skipped)"
            )

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def _scan(self, wanted: Format) -> tuple[Literal["text", "jsonl"], int]:
        detected: Literal["text", "jsonl"] | None = None
        if wanted != "auto":
            detected = wanted
        elif self.path.suffix.lower() in _JSONL_SUFFIXES:
            detected = "jsonl"
        total = 0
        for raw in self._file:
            text = raw.decode("utf-8", errors="replace")
            if total == 0:
                text = text.lstrip(_BOM)
            if _skipped(text):
                continue
            total += 1
            if detected is None:
                detected = "jsonl" if text.lstrip().startswith("{") else "text"
        return detected or "text", total

    def lines(self) -> Iterator[InputLine]:
        """Yield each input line in order, lazily; unusable lines carry their problem."""
        self._file.seek(0)
        parse = _parse_jsonl if self.format == "jsonl" else _parse_text
        for number, raw in enumerate(self._file, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                text = raw.decode("utf-8", errors="replace")
                if _skipped(text):
                    continue
                yield InputLine(
                    number, None, None, f"line {number}: not valid UTF-8 ({exc.reason})"
                )
                continue
            if number == 1:
                text = text.lstrip(_BOM)
            if _skipped(text):
                continue
            yield parse(number, text)


def _parse_text(number: int, text: str) -> InputLine:
    prompt = text.strip()
    return InputLine(number, prompt, prompt)


def _parse_jsonl(number: int, text: str) -> InputLine:
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError as exc:
        return InputLine(
            number, None, None, f"line {number}: not valid JSON: {exc.msg} (column {exc.pos + 1})"
        )
    except RecursionError:
        return InputLine(number, None, None, f"line {number}: not valid JSON: nested too deeply")
    if not isinstance(value, dict):
        return InputLine(
            number,
            None,
            None,
            f'line {number}: expected a JSON object with a "prompt", got {_json_type(value)}',
        )
    prompt = value.get("prompt")
    if "prompt" not in value:
        return InputLine(number, None, None, f'line {number}: missing "prompt"')
    if not isinstance(prompt, str) or not prompt.strip():
        return InputLine(number, None, None, f'line {number}: "prompt" must be a non-empty string')
    unknown = sorted(key for key in value if key not in REQUEST_FIELDS)
    if unknown:
        return InputLine(
            number,
            prompt,
            None,
            f"line {number}: unknown field {unknown[0]!r}; allowed: {', '.join(REQUEST_FIELDS)}",
        )
    return InputLine(number, prompt, value)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"
