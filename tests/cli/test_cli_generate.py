"""``flux-async generate``, run in-process against the fake provider over loopback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cli_helpers import FAST, PNG, against
from conftest import Run

from flux_async.testing import FakeProvider


def test_generate_prints_urls_and_saves(tmp_path: Path, run: Run) -> None:
    status, stdout, stderr = run(
        "generate",
        "a red fox",
        *FAST,
        "--aspect-ratio",
        "16:9",
        "--num-images",
        "2",
        "--model",
        "schnell",
        "--out",
        str(tmp_path / "new" / "dir"),
    )
    assert status == 0, stderr
    urls, paths = stdout.splitlines()[:2], stdout.splitlines()[2:]
    assert all(url.startswith("http://127.0.0.1:") and url.endswith(".png") for url in urls)
    assert len(paths) == 2
    assert all(Path(path).parent == tmp_path / "new" / "dir" for path in paths)
    assert all(Path(path).read_bytes().startswith(PNG) for path in paths)
    assert "2 images, cost 0.002" in stderr


def test_generate_sends_the_prompt_stripped(run: Run, fake: FakeProvider) -> None:
    status, _, stderr = run("generate", "  a red fox \n", *against(fake))
    assert status == 0, stderr
    assert dict(fake.creates_per_prompt) == {"a red fox": 1}


@pytest.mark.parametrize("fake_as", ["piapi", "aimlapi"])
def test_generate_with_the_fake_as_another_provider(fake_as: str, run: Run) -> None:
    status, stdout, stderr = run("generate", "a red fox", *FAST, "--fake-as", fake_as)
    assert status == 0, stderr
    assert stdout.strip().endswith(".png")


def test_generate_checks_out_before_paying(tmp_path: Path, run: Run, fake: FakeProvider) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file, not a directory")
    status, stdout, stderr = run("generate", "a fox", *against(fake), "--out", str(taken))
    assert status == 2
    assert stdout == ""
    assert stderr == f"flux-async: cannot write {taken}: File exists\n"
    status, _, stderr = run("generate", "a fox", *against(fake), "--out", str(taken / "below"))
    assert status == 2
    assert stderr.startswith("flux-async: cannot write ") and len(stderr.splitlines()) == 1
    assert fake.create_attempts == 0


def test_generate_with_a_bad_aspect_ratio(run: Run) -> None:
    status, stdout, stderr = run("generate", "a fox", *FAST, "--aspect-ratio", "5:4")
    assert status == 2
    assert stdout == ""
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith("flux-async: shortapi: aspect_ratio='5:4' is not allowed")
    assert "16:9" in stderr and "Traceback" not in stderr


def test_generate_failed_job(run: Run) -> None:
    status, stdout, stderr = run("generate", "[fault:fail] a fox", *FAST)
    assert status == 1
    assert stdout == ""
    assert len(stderr.splitlines()) == 1 and "failed" in stderr


def test_the_key_comes_from_the_providers_own_variable(
    run: Run, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHORTAPI_KEY", "sk-from-the-environment")
    status, _, stderr = run(
        "generate",
        "a fox",
        "--provider",
        "shortapi",
        "--base-url",
        fake.url,
        "--first-poll",
        "0.05",
        "--poll-interval",
        "0.05",
    )
    assert status == 0, stderr
    assert fake.create_attempts == 1


def test_verbose_shows_the_librarys_logs_and_no_secret(run: Run, fake: FakeProvider) -> None:
    """A 429 makes the client log (at INFO); each job's life is logged at DEBUG."""
    secret = "sk-never-in-a-log-7777"
    status, _, quiet_stderr = run("generate", "a fox", *against(fake, key=secret))
    assert status == 0
    assert "flux_async" not in quiet_stderr
    for verbose in ("-v", "-vv"):
        status, stdout, stderr = run(
            "generate", f"[fault:429] a fox {verbose}", *against(fake, key=secret), verbose
        )
        assert status == 0, stderr
        records = [line for line in stderr.splitlines() if " flux_async" in line]
        assert records, stderr
        assert all("flux-async: " in line for line in records)
        assert secret not in stdout + stderr
    # The command leaves the library's logging as it found it.
    assert logging.getLogger("flux_async").level == logging.NOTSET
    assert not [
        handler
        for handler in logging.getLogger("flux_async").handlers
        if not isinstance(handler, logging.NullHandler)
    ]


def test_verbose_levels() -> None:
    import io
    import sys

    from flux_async._cli import _configure_logging

    stream = io.StringIO()
    saved, sys.stderr = sys.stderr, stream
    try:
        restore = _configure_logging(1, None)
        logging.getLogger("flux_async.jobs").debug("job %s submitted", "j1")
        logging.getLogger("aiohttp.client").debug("not at -v")
        restore()
        logging.getLogger("flux_async.jobs").warning("not after restore")
        restore = _configure_logging(2, None)
        logging.getLogger("aiohttp.client").debug("at -vv")
        restore()
    finally:
        sys.stderr = saved
    lines = stream.getvalue().splitlines()
    assert lines[0] == "flux-async: DEBUG flux_async.jobs: job j1 submitted"
    assert len(lines) == 2 and lines[1].endswith("flux-async: DEBUG aiohttp.client: at -vv")
