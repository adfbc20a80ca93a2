"""Prompt files: one prompt per line, or one JSON request object per line (JSONL).

`read_prompts` reads them the way the ``flux-async batch`` command does::

    async for outcome in client.generate_many(read_prompts("prompts.txt")):
        ...

Lines are stripped; blank lines and lines starting with ``#`` are skipped in both formats.
A file is JSONL when its name ends in ``.jsonl`` or ``.ndjson``, or when every line that is
neither blank nor a comment is a JSON object; otherwise each line is a prompt. A file that
is not UTF-8 text (a NUL byte, or bytes that do not decode) is refused when opened, before
any prompt is handed out.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import msgspec

from ._errors import ValidationError
from ._models import GenerationRequest

__all__ = ["PromptFile", "PromptLine", "read_prompts"]

PromptFormat = Literal["auto", "text", "jsonl"]

#: The keys a JSONL request object may have: the fields of `GenerationRequest`.
REQUEST_FIELDS: tuple[str, ...] = tuple(
    field.name for field in msgspec.structs.fields(GenerationRequest)
)
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_BOM = "\ufeff"
# A stream (stdin, a pipe) is copied here while it is scanned: memory up to this, then disk.
_SPOOL_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PromptLine:
    """One input of a prompt file: a line that is neither blank nor a comment.

    Attributes:
        line: the line number in the file, from 1.
        prompt: the prompt (stripped), when the line has one.
        item: what to give `FluxClient.generate_many`: the prompt, or the request mapping;
            ``None`` when the line cannot be used.
        problem: why the line cannot be used (``"line 3: not valid JSON: ..."``), or None.
    """

    line: int
    prompt: str | None
    item: str | dict[str, Any] | None
    problem: str | None = None


def _decode(raw: bytes | str, number: int, name: str) -> str:
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"{name} is not a text file: line {number} is not valid UTF-8 ({exc.reason})"
            ) from None
    if "\x00" in text:
        raise ValidationError(f"{name} is not a text file: line {number} has a NUL byte")
    if number == 1:
        text = text.lstrip(_BOM)
    return text.strip()


def _is_json_object(text: str) -> bool:
    if not text.startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


class PromptFile:
    """An open prompt file: its format, how many prompts it has, and its lines.

    Iterating yields each usable input in order, lazily: a `str` per text line, a `dict`
    per JSONL line. `lines` yields every input line with its number and, for a line that
    cannot be used, the reason. Close it (or use ``with``) when done; `read_prompts`
    returns one.

    Attributes:
        name: the file's name (for messages).
        format: ``"text"`` or ``"jsonl"``.
        count: how many lines are neither blank nor comments.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | IO[str] | IO[bytes],
        *,
        format: PromptFormat = "auto",
    ) -> None:
        if format not in ("auto", "text", "jsonl"):
            raise ValidationError(
                f"format must be 'auto', 'text' or 'jsonl', got {format!r}", field="format"
            )
        self._file: IO[bytes]
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            self.name = str(path)
            suffix = path.suffix.lower()
            # One handle for both passes: a file deleted or replaced mid-batch still reads.
            self._file = path.open("rb")
            try:
                self.format, self.count = self._scan(self._file, format, suffix)
            except BaseException:
                self._file.close()
                raise
            self._file.seek(0)
        else:
            name = getattr(source, "name", None)
            self.name = name if isinstance(name, str) else "<stream>"
            suffix = Path(self.name).suffix.lower() if isinstance(name, str) else ""
            self._file = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
            try:
                self.format, self.count = self._scan(source, format, suffix, copy=self._file)
            except BaseException:
                self._file.close()
                raise
            self._file.seek(0)

    def _scan(
        self,
        source: IO[str] | IO[bytes],
        wanted: PromptFormat,
        suffix: str,
        *,
        copy: IO[bytes] | None = None,
    ) -> tuple[Literal["text", "jsonl"], int]:
        count = 0
        all_objects = True
        raws: Iterable[bytes | str] = source
        for number, raw in enumerate(raws, 1):
            if copy is not None:
                copy.write(raw.encode("utf-8") if isinstance(raw, str) else raw)
            text = _decode(raw, number, self.name)
            if not text or text.startswith("#"):
                continue
            count += 1
            if wanted == "auto" and all_objects and suffix not in _JSONL_SUFFIXES:
                all_objects = _is_json_object(text)
        if wanted != "auto":
            return wanted, count
        if suffix in _JSONL_SUFFIXES or (count and all_objects):
            return "jsonl", count
        return "text", count

    def lines(self) -> Iterator[PromptLine]:
        """Yield each input line in order, lazily; unusable lines carry their problem."""
        self._file.seek(0)
        parse = _parse_jsonl if self.format == "jsonl" else _parse_text
        for number, raw in enumerate(self._file, 1):
            text = _decode(raw, number, self.name)
            if text and not text.startswith("#"):
                yield parse(number, text)

    def __iter__(self) -> Iterator[str | dict[str, Any]]:
        """Yield each input (a prompt or a request mapping), lazily.

        Raises:
            ValidationError: a JSONL line is not a usable request (naming the line).
        """
        for line in self.lines():
            if line.item is None:
                raise ValidationError(f"{self.name} {line.problem}")
            yield line.item

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> PromptFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PromptFile({self.name!r}, format={self.format!r}, count={self.count})"


def read_prompts(
    source: str | os.PathLike[str] | IO[str] | IO[bytes], *, format: PromptFormat = "auto"
) -> PromptFile:
    """Open a prompt file the way ``flux-async batch`` reads it.

    Each line is stripped; blank lines and lines starting with ``#`` are skipped. The result
    yields a `str` per line of a text file, or a `dict` (the keys of `GenerationRequest`)
    per line of a JSONL file, lazily, so it can be given straight to
    `FluxClient.generate_many`. Close it, or use it in a ``with`` block.

    Args:
        source: a path, or an open file or stream (text or binary; a stream is copied to a
            temporary file as it is scanned).
        format: ``"auto"`` (JSONL when the name ends in ``.jsonl`` or every line is a JSON
            object), ``"text"`` or ``"jsonl"``.

    Raises:
        OSError: the file cannot be opened or read.
        ValidationError: it is not UTF-8 text (a NUL byte, or bytes that do not decode).
    """
    return PromptFile(source, format=format)


def _parse_text(number: int, text: str) -> PromptLine:
    return PromptLine(number, text, text)


def _parse_jsonl(number: int, text: str) -> PromptLine:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return PromptLine(
            number, None, None, f"line {number}: not valid JSON: {exc.msg} (column {exc.pos + 1})"
        )
    except RecursionError:
        return PromptLine(number, None, None, f"line {number}: not valid JSON: nested too deeply")
    if not isinstance(value, dict):
        return PromptLine(
            number,
            None,
            None,
            f'line {number}: expected a JSON object with a "prompt", got {_json_type(value)}',
        )
    if "prompt" not in value:
        return PromptLine(number, None, None, f'line {number}: missing "prompt"')
    prompt = value["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        return PromptLine(number, None, None, f'line {number}: "prompt" must be a non-empty string')
    prompt = prompt.strip()
    unknown = sorted(key for key in value if key not in REQUEST_FIELDS)
    if unknown:
        return PromptLine(
            number,
            prompt,
            None,
            f"line {number}: unknown field {unknown[0]!r}; allowed: {', '.join(REQUEST_FIELDS)}",
        )
    value["prompt"] = prompt
    return PromptLine(number, prompt, value)


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
