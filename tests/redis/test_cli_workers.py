"""``flux-async batch FILE --redis URL`` and ``flux-async worker --redis URL`` as real processes
(``python -m flux_async``) on a real redis-server, against a FakeProvider served by the test
over loopback (reached as ShortAPI, so its counters prove what was paid for)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio")

from flux_async.testing import FakeProvider  # noqa: E402

if TYPE_CHECKING:
    # Not imported when the tests run: tests/cli has a conftest module of its own.
    from conftest import RedisServer

pytestmark = pytest.mark.slow

COMMAND = [sys.executable, "-m", "flux_async"]
API_KEY = "sk-cli-workers-5f0c2a7d"
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


def _sigint_by_default() -> None:
    # A shell may start background jobs with SIGINT ignored; these tests are about Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        preexec_fn=_sigint_by_default,
    )


async def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.to_thread(process.communicate, timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, err


def worker(
    redis: RedisServer, namespace: str, fake: FakeProvider, out: Path, name: str, *more: str
) -> subprocess.Popen[str]:
    return start(
        "worker",
        "--redis",
        redis.url,
        "--namespace",
        namespace,
        "--provider",
        "shortapi",
        "--base-url",
        fake.url,
        "--api-key",
        API_KEY,
        "--first-poll",
        "0.1",
        "--poll-interval",
        "0.1",
        "--timeout",
        "60",
        "--out",
        str(out),
        "--name",
        name,
        "-q",
        *more,
    )


def batch_args(redis: RedisServer, namespace: str, source: Path, out: Path) -> list[str]:
    return [
        "batch",
        str(source),
        "--redis",
        redis.url,
        "--namespace",
        namespace,
        "--out",
        str(out),
        "-q",
    ]


async def wait_queued(
    redis: RedisServer, namespace: str, count: int, batch: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + 30
    while await queue_length(redis, namespace) < count:
        assert batch.poll() is None, batch.communicate()
        assert time.monotonic() < deadline, "the batch was not queued"
        await asyncio.sleep(0.05)


async def run_batch(
    redis: RedisServer, namespace: str, source: Path, out: Path
) -> tuple[int, str, str]:
    return await finish(start(*batch_args(redis, namespace, source, out)))


def read_manifest(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_requests(path: Path, prompts: list[str], *extra: str) -> None:
    lines = [json.dumps({"prompt": prompt}) for prompt in prompts]
    path.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")


async def queue_length(redis: RedisServer, namespace: str) -> int:
    """Entries ever added to the queue (a done input's entry is deleted)."""
    client = redis_asyncio.Redis.from_url(redis.url)
    try:
        if not await client.exists(f"{namespace}:queue"):
            return 0
        return int((await client.xinfo_stream(f"{namespace}:queue"))["entries-added"])
    finally:
        await client.aclose()


@pytest.mark.timeout(90)
async def test_a_batch_over_two_workers_one_manifest_line_per_input(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """Two worker processes share a batch queued by ``batch --redis``: every input line has
    exactly one manifest line (rejected lines never queued, nor sent), each prompt was
    created once, the images are on disk. Running the batch command again only collects:
    nothing is queued or created again. Ctrl-C stops a worker cleanly."""
    prompts = [f"a fox in the snow, take {i}" for i in range(120)]
    source = tmp_path / "prompts.jsonl"
    write_requests(
        source,
        prompts,
        "{not json",  # rejected by the reader
        json.dumps({"prompt": "a wide fox", "aspect_ratio": "7:1"}),  # rejected by a worker
    )
    images = tmp_path / "images"
    out = tmp_path / "run"
    async with FakeProvider(latency=(0.05, 0.3), seed=3, api_key=API_KEY) as fake:
        collecting = start(*batch_args(redis_server, namespace, source, out))
        # Workers started once the batch is queued, so none finds the queue idle first.
        await wait_queued(redis_server, namespace, 121, collecting)
        first = worker(redis_server, namespace, fake, images, "w1", "--exit-when-idle", "2")
        second = worker(redis_server, namespace, fake, images, "w2", "--concurrency", "16")
        status, stdout, stderr = await finish(collecting)
        assert status == 1, stderr  # two rejected lines
        assert "Traceback" not in stderr
        rows = read_manifest(out / "manifest.jsonl")
        assert [row["index"] for row in rows] == list(range(122))
        assert all(list(row) == MANIFEST_KEYS for row in rows)
        assert [row["line"] for row in rows] == list(range(1, 123))
        by_status = collections.Counter(row["status"] for row in rows)
        assert by_status == {"succeeded": 120, "rejected": 2}
        assert rows[120]["error"].startswith("line 121: not valid JSON")
        assert rows[121]["error"].startswith("line 122: ") and "7:1" in rows[121]["error"]
        for row, prompt in zip(rows, prompts, strict=False):
            assert row["prompt"] == prompt
            assert fake.jobs[row["job_id"]].prompt == prompt
            assert row["files"] and all(
                Path(file).parent == images and Path(file).read_bytes().startswith(b"\x89PNG")
                for file in row["files"]
            )
        assert fake.creates_per_prompt == collections.Counter(prompts)  # once each, no other
        assert "120 succeeded, 0 failed, 0 skipped, 2 rejected" in stdout
        batch_id = stdout.split("batch:")[1].split()[0]
        assert f"--batch-id {batch_id}" in stdout

        # Again: collects the same outcomes; nothing queued or created a second time.
        before = (out / "manifest.jsonl").read_text(encoding="utf-8")
        status, stdout, stderr = await run_batch(redis_server, namespace, source, out)
        assert status == 1, stderr
        assert "queued earlier (121 inputs)" in stderr
        assert (out / "manifest.jsonl").read_text(encoding="utf-8") == before
        assert await queue_length(redis_server, namespace) == 121
        assert fake.creates_per_prompt == collections.Counter(prompts)

        status, _, stderr = await finish(first)
        assert status == 0, stderr
        assert "worker w1: nothing left to do: " in stderr
        second.send_signal(signal.SIGINT)
        status, _, stderr = await finish(second)
        assert status == 130, stderr
        assert "worker w2: stopping: finishing the 0 inputs in hand" in stderr
        assert "worker w2: stopped: " in stderr
        assert "Traceback" not in stderr


@pytest.mark.timeout(90)
async def test_a_worker_killed_mid_run_every_input_still_one_outcome(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """One of two workers is killed with SIGKILL while it has accepted jobs in flight: the
    other takes its inputs over once idle, re-attaches its jobs by provider id; the batch
    command still writes one manifest line per input and no prompt was created twice."""
    prompts = [f"a lighthouse at dusk, take {i}" for i in range(240)]
    source = tmp_path / "prompts.jsonl"
    write_requests(source, prompts)
    images = tmp_path / "images"
    out = tmp_path / "run"
    client = redis_asyncio.Redis.from_url(redis_server.url)
    async with FakeProvider(latency=(0.4, 1.0), seed=8, api_key=API_KEY) as fake:
        options = ("--min-idle", "1.5", "--exit-when-idle", "3", "--concurrency", "24")
        collecting = start(*batch_args(redis_server, namespace, source, out))
        await wait_queued(redis_server, namespace, 240, collecting)
        victim = worker(redis_server, namespace, fake, images, "victim", *options)
        survivor = worker(redis_server, namespace, fake, images, "survivor", *options)

        async def victim_has_jobs_in_flight() -> bool:
            held = 0
            for key in await client.keys(f"{namespace}:batch:*:jobs"):
                for raw in await client.hvals(key):
                    entry = json.loads(raw)
                    held += entry["worker"] == "victim" and entry["state"] == "accepted"
            return held >= 5

        deadline = time.monotonic() + 30
        while not await victim_has_jobs_in_flight():
            assert time.monotonic() < deadline, "the victim never had jobs in flight"
            assert collecting.poll() is None, collecting.communicate()
            await asyncio.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        await finish(victim)

        status, _, stderr = await finish(collecting)
        rows = read_manifest(out / "manifest.jsonl")
        assert [row["index"] for row in rows] == list(range(240)), stderr
        by_status = collections.Counter(row["status"] for row in rows)
        # Only a create on the wire at the kill may end unknown (never sent again).
        assert by_status["succeeded"] + by_status["unknown"] == 240, by_status
        assert by_status["unknown"] <= 24
        assert status == (0 if by_status["unknown"] == 0 else 1), stderr
        assert max(fake.creates_per_prompt.values()) == 1
        assert set(fake.creates_per_prompt) <= set(prompts)
        for row in rows:
            if row["status"] == "succeeded":
                assert fake.jobs[row["job_id"]].prompt == prompts[row["index"]]
                assert all(Path(file).read_bytes().startswith(b"\x89PNG") for file in row["files"])
                assert row["files"]

        status, _, stderr = await finish(survivor)
        assert status == 0, stderr
        counts = re.search(r"(\d+) re-attached, \d+ unknown, (\d+) taken over", stderr)
        assert counts is not None, stderr
        assert int(counts[1]) >= 1 and int(counts[2]) >= 1, stderr
    await client.aclose()


@pytest.mark.timeout(60)
async def test_ctrl_c_stops_collecting_not_the_batch_and_the_same_command_collects_it(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """With no worker running, Ctrl-C on ``batch --redis`` records every line ``pending``
    (exit 130) and leaves the batch queued; the same command, once a worker ran, collects
    every outcome without queuing anything again."""
    prompts = [f"a harbour, take {i}" for i in range(30)]
    source = tmp_path / "prompts.jsonl"
    write_requests(source, prompts)
    out = tmp_path / "run"
    collecting = start(*batch_args(redis_server, namespace, source, out))
    deadline = time.monotonic() + 30
    while await queue_length(redis_server, namespace) < 30 or not (out / "manifest.jsonl").exists():
        assert time.monotonic() < deadline and collecting.poll() is None, collecting.communicate()
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    collecting.send_signal(signal.SIGINT)
    status, stdout, stderr = await finish(collecting)
    assert status == 130, stderr
    assert "Traceback" not in stderr
    rows = read_manifest(out / "manifest.jsonl")
    assert [row["status"] for row in rows] == ["pending"] * 30
    assert "collect it with: flux-async batch" in rows[0]["error"]
    assert "30 pending" in stdout

    async with FakeProvider(latency=(0.02, 0.1), seed=1, api_key=API_KEY) as fake:
        images = tmp_path / "images"
        done = worker(redis_server, namespace, fake, images, "late", "--exit-when-idle", "1")
        status, stdout, stderr = await run_batch(redis_server, namespace, source, out)
        assert status == 0, stderr
        assert "30 succeeded" in stdout
        rows = read_manifest(out / "manifest.jsonl")
        assert [row["status"] for row in rows] == ["succeeded"] * 30
        assert await queue_length(redis_server, namespace) == 30
        assert fake.creates_per_prompt == collections.Counter(prompts)
        assert (await finish(done))[0] == 0
        first_id = stdout.split("batch:")[1].split()[0]

        # --new-batch queues the same inputs again (and pays again), the manifest set aside.
        again = start(*batch_args(redis_server, namespace, source, out), "--new-batch")
        await wait_queued(redis_server, namespace, 60, again)
        done = worker(redis_server, namespace, fake, images, "later", "--exit-when-idle", "1")
        status, stdout, stderr = await finish(again)
        assert status == 0, stderr
        assert f"the earlier manifest is now {out / 'manifest.1.jsonl'}" in stderr
        assert stdout.split("batch:")[1].split()[0] != first_id
        assert len(read_manifest(out / "manifest.1.jsonl")) == 30
        assert [row["status"] for row in read_manifest(out / "manifest.jsonl")] == [
            "succeeded"
        ] * 30
        assert fake.creates_per_prompt == collections.Counter(prompts * 2)
        assert (await finish(done))[0] == 0
