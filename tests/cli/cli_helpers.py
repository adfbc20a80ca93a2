"""Helpers of the ``flux-async`` command's tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flux_async.testing import FakeProvider

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PNG = b"\x89PNG\r\n\x1a\n"
# Fast jobs: most tests need the command's behaviour, not realistic timing.
FAST = ["--provider", "fake", "--fake-latency", "0.01,0.05"]
# Polling for a FakeProvider reached as a real provider (whose polling waits seconds).
QUICK_POLL = ["--first-poll", "0.05", "--poll-interval", "0.05"]
MANIFEST_KEYS = [
    "index",
    "line",
    "prompt",
    "status",
    "job_id",
    "image_urls",
    "files",
    "cost",
    "error",
]


def read_manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_line(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {row["line"]: row for row in rows}


def example_prompts() -> dict[int, str]:
    """The prompts of examples/prompts.txt by line number, as a user reads the file."""
    lines = (EXAMPLES / "prompts.txt").read_text(encoding="utf-8").splitlines()
    return {
        number: text.strip()
        for number, text in enumerate(lines, 1)
        if text.strip() and not text.startswith("#")
    }


def against(fake: FakeProvider, *, key: str = "k") -> list[str]:
    """Options pointing the command at ``fake`` as if it were ShortAPI."""
    return ["--provider", "shortapi", "--base-url", fake.url, "--api-key", key, *QUICK_POLL]
