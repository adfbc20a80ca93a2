"""Every example runs against the bundled fake provider, with no key and no network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow  # a subprocess each; CI runs them, `-m "not slow"` skips them locally
@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("quickstart.py", [], "/files/"),
        ("image_to_image.py", [], "image-to-image"),
        ("batch_progress.py", ["150"], "150 prompts in"),
        ("webhooks_standalone.py", [], "5 creates"),
        ("webhooks_in_aiohttp_app.py", [], "image: http://127.0.0.1"),
        ("webhooks_fastapi.py", [], "image: http://127.0.0.1"),
        ("downloads.py", ["{tmp}"], "saved"),
        ("switching_providers.py", [], "aimlapi"),
    ],
)
def test_example_runs(script: str, args: list[str], expect: str, tmp_path: Path) -> None:
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / script), *argv],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert expect in result.stdout
    if script == "image_to_image.py":
        # A user's own program: a local file in, the result's bytes read, every job logged.
        assert " bytes, " in result.stdout
        assert result.stderr.count("flux_async.jobs job ") >= 4
        assert "finished succeeded" in result.stderr
        assert "fake-key" not in result.stderr
