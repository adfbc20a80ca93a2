"""``batch --redis`` and ``worker``: their options, help and one-line errors (no Redis needed;
the runs against a real redis-server are in tests/redis/test_cli_workers.py)."""

from __future__ import annotations

import shlex
import socket
import sys
from pathlib import Path

import pytest
from conftest import Run

from flux_async._cli.parser import build_parser
from flux_async._cli.redis_batch import recollect_command
from flux_async._cli.redis_link import shown_url


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("a red fox\na lighthouse\n", encoding="utf-8")
    return path


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_unreachable_redis_is_one_line_and_exit_2_with_no_password(
    run: Run, prompts: Path, tmp_path: Path
) -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{closed_port()}/0"
    status, out, err = run("batch", str(prompts), "--redis", url, "--out", str(tmp_path / "o"))
    assert status == 2
    line = one_error_line(err)
    assert line.startswith("flux-async: cannot reach Redis at redis://:***@127.0.0.1:")
    assert "hunter2secret" not in out + err
    assert not (tmp_path / "o" / "manifest.jsonl").exists()

    status, out, err = run("worker", "--redis", url, "--provider", "fake", "--no-download")
    assert status == 2
    assert one_error_line(err).startswith("flux-async: cannot reach Redis at redis://:***@")
    assert "hunter2secret" not in out + err


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost:6379", "redis//x"])
def test_a_url_that_is_not_redis_is_refused(run: Run, prompts: Path, url: str) -> None:
    for argv in (("batch", str(prompts), "--redis", url), ("worker", "--redis", url)):
        status, _, err = run(*argv)
        assert status == 2
        assert "is not a Redis URL: expected redis://HOST:PORT/DB" in one_error_line(err)


def test_without_the_redis_extra_the_error_says_how_to_install_it(
    run: Run, prompts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    for argv in (
        ("batch", str(prompts), "--redis", "redis://localhost:6379/0"),
        ("worker", "--redis", "redis://localhost:6379/0", "--provider", "fake"),
    ):
        status, _, err = run(*argv)
        assert status == 2
        assert "pip install 'flux-async[redis]'" in one_error_line(err)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--provider", "piapi"], "--provider does not apply with --redis"),
        (["--concurrency", "8"], "--concurrency does not apply with --redis"),
        (["--budget", "3"], "--budget does not apply with --redis"),
        (["--resume"], "--resume does not apply with --redis"),
        (["--first-poll", "1"], "--first-poll does not apply with --redis"),
        (["--new-batch", "--batch-id", "b1"], "--new-batch picks a new batch id"),
    ],
)
def test_batch_options_that_belong_to_the_workers_are_refused_with_redis(
    run: Run, prompts: Path, options: list[str], named: str
) -> None:
    status, _, err = run("batch", str(prompts), "--redis", "redis://localhost:1/0", *options)
    assert status == 2
    assert named in one_error_line(err)


def test_batch_id_and_namespace_need_redis(run: Run, prompts: Path) -> None:
    status, _, err = run("batch", str(prompts), "--batch-id", "b1", "--provider", "fake")
    assert status == 2
    assert "--batch-id needs --redis" in one_error_line(err)
    status, _, err = run("batch", str(prompts), "--namespace", "x", "--provider", "fake")
    assert status == 2
    assert "--namespace needs --redis" in one_error_line(err)


def test_worker_needs_redis_and_a_key(run: Run) -> None:
    status, _, err = run("worker", "--provider", "fake")
    assert status == 2
    assert "--redis" in one_error_line(err)
    status, _, err = run("worker", "--redis", "redis://localhost:1/0", "--provider", "piapi")
    assert status == 2
    assert "PIAPI_KEY is not set" in one_error_line(err)
    status, _, err = run("worker", "--redis", "redis://localhost:1/0", "--webhook-port", "0")
    assert status == 2


def test_every_example_of_the_help_parses(run: Run) -> None:
    """The examples in ``worker --help`` and ``batch --help`` are command lines the parser
    takes as they are written."""
    examples = []
    for command in ("worker", "batch"):
        status, out, _ = run(command, "--help")
        assert status == 0
        text = out.replace("\\\n", " ")
        examples += [
            line.split("#")[0].strip()
            for line in text.splitlines()
            if line.strip().startswith("flux-async ") and ("--redis" in line or command == "worker")
        ]
    assert len(examples) >= 5, examples
    parser = build_parser()
    for example in examples:
        args = parser.parse_args(shlex.split(example)[1:])
        assert args.redis.startswith("redis://"), example


def test_the_recollect_command_hides_the_password_and_names_the_batch() -> None:
    command, hidden = recollect_command(
        ["batch", "p.txt", "--redis", "redis://u:pw@h:6379/0", "--new-batch", "-q"], "abc"
    )
    assert command == "flux-async batch p.txt --redis 'redis://u:***@h:6379/0' -q --batch-id abc"
    assert hidden
    command, hidden = recollect_command(
        ["batch", "p.txt", "--redis=redis://h/0", "--batch-id", "old", "--out", "o"], "abc"
    )
    assert command == "flux-async batch p.txt --redis=redis://h/0 --out o --batch-id abc"
    assert not hidden
    assert shown_url("rediss://:s3cret@h:6380/1") == "rediss://:***@h:6380/1"
    assert shown_url("unix:///run/redis.sock") == "unix:///run/redis.sock"
