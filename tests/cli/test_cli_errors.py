"""The command's errors: one line on stderr, exit status 2 for bad usage or input, nothing
sent; ``--help`` and ``--version``."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import FAST, against
from conftest import Run

import flux_async._cli
from flux_async.testing import FakeProvider


def test_missing_key(tmp_path: Path, run: Run) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a fox\n", encoding="utf-8")
    status, _, stderr = run("batch", str(source))
    assert status == 2
    assert stderr == (
        "flux-async: SHORTAPI_KEY is not set; pass --api-key or use --provider fake\n"
    )
    status, _, stderr = run("generate", "a fox", "--provider", "piapi")
    assert status == 2
    assert stderr == "flux-async: PIAPI_KEY is not set; pass --api-key or use --provider fake\n"
    status, _, stderr = run("generate", "a fox", "--provider", "aimlapi", "--api-key", " ")
    assert status == 2 and len(stderr.splitlines()) == 1 and "API key" in stderr


def test_the_key_is_never_printed(run: Run) -> None:
    secret = "sk-do-not-print-4242"
    status, stdout, stderr = run(
        "generate", "a fox", "--api-key", secret, "--base-url", "ftp://example.com"
    )
    assert status == 2
    assert "base_url" in stderr
    assert secret not in stdout + stderr


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Run) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, stderr = run("batch", "prompts.txt", "--provider", "fake")
    assert status == 2
    assert stderr == "flux-async: cannot read prompts.txt: No such file or directory\n"
    status, _, stderr = run("batch", str(tmp_path), "--provider", "fake")
    assert status == 2
    assert "Is a directory" in stderr


def test_empty_file(tmp_path: Path, run: Run) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("# only a comment\n\n   \n", encoding="utf-8")
    status, _, stderr = run("batch", str(source), "--provider", "fake")
    assert status == 2
    assert stderr.startswith(f"flux-async: {source} has no prompts")
    assert not (tmp_path / "out").exists()


def test_a_manifest_that_cannot_be_written_sends_nothing(
    tmp_path: Path, run: Run, fake: FakeProvider
) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a fox\n", encoding="utf-8")
    (tmp_path / "file").write_text("")
    status, _, stderr = run(
        "batch",
        str(source),
        *against(fake),
        "--out",
        str(tmp_path / "out"),
        "--manifest",
        str(tmp_path / "file" / "manifest.jsonl"),
    )
    assert status == 2
    assert stderr.startswith("flux-async: cannot write ") and len(stderr.splitlines()) == 1
    assert fake.create_attempts == 0


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        (["--concurrency", "0"], "--concurrency: must be an integer >= 1, got '0'"),
        (["--concurrency", "many"], "--concurrency: must be an integer >= 1"),
        (["--budget", "abc"], "--budget: must be an amount >= 0"),
        (["--budget", "-1"], "--budget: must be an amount >= 0"),
        (["--budget", "NaN"], "--budget: must be an amount >= 0"),
        (["--budget", "1", "--price-per-job", "-0.5"], "--price-per-job: must be an amount >= 0"),
        (["--budget", "1", "--price-per-job", "inf"], "--price-per-job: must be an amount >= 0"),
        (["--price-per-job", "0.02"], "--price-per-job only applies with --budget"),
        (["--timeout", "0"], "--timeout: must be a number of seconds > 0"),
        (["--poll-interval", "-1"], "--poll-interval: must be a number of seconds > 0"),
        (["--first-poll", "nan"], "--first-poll: must be a number of seconds > 0"),
        (["--orphan-window", "0"], "--orphan-window: must be a number of seconds > 0"),
        (["--provider", "dalle"], "--provider: invalid choice: 'dalle'"),
        (["--fake-as", "dalle"], "--fake-as: invalid choice: 'dalle'"),
        (["--fake-latency", "2,1"], "--fake-latency: must be SECONDS or LOW,HIGH"),
        (["--fake-faults", "1.5"], "--fake-faults: must be a rate from 0 to 1"),
        (["--webhook-port", "70000"], "--webhook-port: must be a port number"),
        (["--format", "csv"], "--format: invalid choice: 'csv'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_invalid_options(option: list[str], complaint: str, tmp_path: Path, run: Run) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a fox\n", encoding="utf-8")
    status, stdout, stderr = run("batch", str(source), "--provider", "fake", *option)
    assert status == 2
    assert stdout == ""
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("flux-async: ") and complaint in stderr
    assert not (tmp_path / "out").exists()


def test_options_that_do_not_go_together(run: Run) -> None:
    status, _, stderr = run("generate", "a fox", "--fake-latency", "1")
    assert status == 2 and "--fake-latency needs --provider fake" in stderr
    status, _, stderr = run("generate", "a fox", "--fake-as", "piapi", "--api-key", "k")
    assert status == 2 and "--fake-as needs --provider fake" in stderr
    status, _, stderr = run("generate", "a fox", *FAST, "--api-key", "k")
    assert status == 2 and "do not apply to --provider fake" in stderr


def test_webhooks_with_the_fake(tmp_path: Path, run: Run) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"fox {i}\n" for i in range(5)), encoding="utf-8")
    status, _, stderr = run(
        "batch",
        str(source),
        *FAST,
        "--out",
        str(tmp_path / "out"),
        "--webhook-port",
        "0",
        "--timeout",
        "20",
    )
    assert status == 0, stderr


def test_bad_webhook_options(run: Run) -> None:
    status, _, stderr = run(
        "generate", "a fox", *FAST, "--webhook-public-url", "ftp://example.com/hooks"
    )
    assert status == 2
    assert stderr.startswith("flux-async: Webhooks.public_url must be an http(s) URL")
    for provider in (["--provider", "aimlapi", "--api-key", "k"], [*FAST, "--fake-as", "aimlapi"]):
        status, _, stderr = run("generate", "a fox", *provider, "--orphan-window", "5")
        assert status == 2
        assert stderr == (
            "flux-async: aimlapi sends no callbacks: drop the --webhook-* and --orphan-window "
            "options\n"
        )


def test_help_usage_and_version(run: Run) -> None:
    status, stdout, _ = run("--help")
    assert status == 0 and "generate" in stdout and "batch" in stdout
    status, stdout, _ = run("batch", "--help")
    assert status == 0 and "--concurrency" in stdout and "--fake-latency" not in stdout
    assert "--price-per-job" in stdout and "--orphan-window" in stdout
    assert "--poll-interval" in stdout and "--fake-as" in stdout
    status, stdout, _ = run("--version")
    assert status == 0 and stdout.startswith("flux-async ")
    status, _, stderr = run()
    assert status == 2 and "required" in stderr


def test_help_names_no_file_a_wheel_does_not_ship(run: Run) -> None:
    for argv in (["--help"], ["batch", "--help"], ["generate", "--help"]):
        status, stdout, _ = run(*argv)
        assert status == 0
        assert "examples/" not in stdout


def test_unexpected_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, run: Run) -> None:
    def explode(*args: object) -> int:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setitem(flux_async._cli.COMMANDS, "generate", explode)
    status, _, stderr = run("generate", "a fox", *FAST)
    assert status == 1
    assert stderr == (
        "flux-async: unexpected error: RuntimeError: boom second line (run with -v for details)\n"
    )
    status, _, stderr = run("generate", "a fox", *FAST, "-v")
    assert status == 1
    assert "Traceback" in stderr and "(run with -v" not in stderr
