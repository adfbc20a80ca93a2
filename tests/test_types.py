"""Types that catch mistakes: mypy --strict rejects misspelt or mistyped `submit`/`generate`
keywords and a misspelt `Outcome.status`, and accepts the correct spellings."""

from __future__ import annotations

import subprocess
import sys
import typing
from decimal import Decimal
from pathlib import Path

import pytest

from flux_async import FluxClient, JobStatus, OutcomeStatus, SubmitParams
from flux_async._job import Job
from flux_async._models import REQUEST_FIELDS

SNIPPET = """\
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from flux_async import FluxClient, Job, JobStatus, Outcome


async def wrong(client: FluxClient, outcome: Outcome, job: Job) -> None:
    await client.generate("x", aspect_ration="16:9", num_images="two")  # line 10
    if outcome.status == "succeded":  # line 11
        pass


async def right(client: FluxClient, outcome: Outcome, job: Job) -> Decimal | None:
    await client.generate("x", aspect_ratio="16:9", num_images=2, guidance=3, seed=None)
    await client.submit("x", image_url=Path("in.png"), extra={"output_format": "png"})
    await client.submit("x", image_url=b"raw bytes", model="schnell")
    params: dict[str, object] = {"seed": 1}
    await client.submit("x", **params)  # type: ignore[arg-type]
    if outcome.status == "succeeded" or outcome.status == "skipped":
        pass
    if outcome.status == JobStatus.SUCCEEDED.value:
        pass
    if outcome.job is not None and outcome.job.status is JobStatus.SUCCEEDED:
        pass
    return job.cost
"""


def test_submit_params_match_the_request_fields() -> None:
    assert tuple(SubmitParams.__annotations__) == REQUEST_FIELDS
    expected = {status.value for status in JobStatus} | {"rejected", "skipped"}
    assert set(typing.get_args(OutcomeStatus)) == expected


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.Unpack is 3.11+")
def test_the_public_annotations_resolve_at_run_time() -> None:
    hints = typing.get_type_hints(FluxClient.submit)
    assert "params" in hints
    assert typing.get_type_hints(Job.cost.fget)["return"] == Decimal | None


@pytest.mark.slow
def test_mypy_strict_rejects_the_mistakes(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert result.returncode == 1, result.stdout + result.stderr
    by_line: dict[int, list[str]] = {}
    for line in errors:
        by_line.setdefault(int(line.split(":")[1]), []).append(line)
    assert set(by_line) == {10, 11}, result.stdout  # the correct spellings pass
    line10 = "\n".join(by_line[10])
    assert 'Unexpected keyword argument "aspect_ration"' in line10
    assert 'Argument "num_images"' in line10 and '"str"' in line10
    assert "Non-overlapping equality check" in by_line[11][0]
    assert "succeded" in by_line[11][0]
