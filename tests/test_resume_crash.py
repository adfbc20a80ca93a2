"""kill -9 a journaled batch at random moments, resume it: every input has exactly one
outcome, nothing was created twice, every succeeded job's images are on disk.

The FakeProvider runs in the test process and outlives the killed client process; the
batch runs in a real subprocess (``python _CHILD``), killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
from pathlib import Path

import pytest
from support import FAST_RETRY

import flux_async
from flux_async import FluxClient, PiAPI, PollPolicy, ShortAPI, Webhooks
from flux_async.testing import FakeProvider, Faults

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

KEY = "crash-key"
N = 40

_CHILD = """
import asyncio, sys
import flux_async
from flux_async import FluxClient, PiAPI, ShortAPI, PollPolicy, RetryPolicy, Webhooks

async def main(provider, url, journal, out, port):
    make = {"shortapi": ShortAPI, "piapi": PiAPI}[provider]
    webhooks = Webhooks(port=int(port), orphan_window=1.0) if port != "0" else None
    poll = PollPolicy(wait_first=0.05, wait_initial=0.02, wait_max=0.1, timeout=20)
    retry = RetryPolicy(attempts=40, wait_initial=0.01, wait_max=0.05)
    async with FluxClient(make("KEY", base_url=url), poll=poll, retry=retry,
                          webhooks=webhooks, seed=0) as client:
        print("started", flush=True)
        prompts = [f"crash prompt {i}" for i in range(N)]
        async for o in client.generate_many(prompts, journal=journal, download_to=out,
                                            concurrency=8):
            print("outcome", o.index, o.status, flush=True)
    print("done", flush=True)

asyncio.run(main(*sys.argv[1:]))
""".replace("KEY", KEY).replace("range(N)", f"range({N})")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _run_and_kill(script: Path, args: list[str], rng: random.Random, *, after: float) -> int:
    """Start the batch, SIGKILL it ``after`` seconds after it started; return outcomes seen."""
    # The child imports the flux_async under test, wherever this process found it.
    root = str(Path(flux_async.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    seen = 0
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    if not line.startswith(b"started"):
        assert process.stderr is not None
        pytest.fail(f"the batch did not start: {(await process.stderr.read()).decode()[-2000:]}")
    deadline = asyncio.get_running_loop().time() + after
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            break
        try:
            line = await asyncio.wait_for(process.stdout.readline(), left)
        except TimeoutError:
            break
        if not line or line.startswith(b"done"):
            break
        seen += line.startswith(b"outcome")
    if process.returncode is None:
        os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    assert process.returncode == -signal.SIGKILL or line.startswith(b"done")
    return seen


async def _resume(provider: str, url: str, journal: Path, out: Path, port: int) -> list:  # type: ignore[type-arg]
    make = {"shortapi": ShortAPI, "piapi": PiAPI}[provider]
    webhooks = Webhooks(port=port, orphan_window=1.0) if port else None
    poll = PollPolicy(wait_first=0.05, wait_initial=0.02, wait_max=0.1, timeout=20)
    async with FluxClient(
        make(KEY, base_url=url), poll=poll, retry=FAST_RETRY, webhooks=webhooks, seed=1
    ) as client:
        prompts = [f"crash prompt {i}" for i in range(N)]
        return [
            o
            async for o in client.generate_many(
                prompts, journal=journal, download_to=out, concurrency=8
            )
        ]


def _check(outcomes: list, fake: FakeProvider) -> None:  # type: ignore[type-arg]
    assert sorted(o.index for o in outcomes) == list(range(N))  # exactly one each
    assert max(fake.creates_per_prompt.values()) == 1  # nothing paid twice
    for outcome in outcomes:
        if outcome.status == "succeeded":
            assert outcome.files and all(path.exists() for path in outcome.files)
        else:
            assert outcome.error is not None  # an unknown carries its evidence
    succeeded = sum(o.status == "succeeded" for o in outcomes)
    unknown = [o for o in outcomes if o.status == "unknown"]
    assert succeeded + len(unknown) == N, [o.status for o in outcomes]
    for outcome in unknown:
        assert "in flight" in str(outcome.error) or "answer" in str(outcome.error)


@pytest.mark.parametrize(
    ("provider", "webhooks", "create_delay", "seed"),
    [
        ("shortapi", False, None, 1),
        ("shortapi", False, None, 2),
        ("piapi", False, None, 3),
        ("shortapi", True, None, 4),
        ("piapi", True, (0.2, 1.5), 5),
        ("piapi", False, (0.2, 1.5), 6),
        ("shortapi", False, (0.2, 1.5), 7),
    ],
)
async def test_kill_9_then_resume_pays_nothing_twice_and_loses_nothing(
    tmp_path: Path, provider: str, webhooks: bool, create_delay: object, seed: int
) -> None:
    rng = random.Random(seed)
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    journal, out = tmp_path / "run.sqlite", tmp_path / "out"
    port = _free_port() if webhooks else 0
    faults = Faults(create_delay=create_delay) if create_delay is not None else Faults()
    async with FakeProvider(latency=(0.2, 1.0), faults=faults, seed=seed) as fake:
        args = [provider, fake.url, str(journal), str(out), str(port)]
        seen = await _run_and_kill(script, args, rng, after=rng.uniform(0.3, 1.5))
        assert seen < N, "the batch finished before the kill: kill earlier"
        if rng.random() < 0.5:
            # Killed again, during the resume.
            await _run_and_kill(script, args, rng, after=rng.uniform(0.2, 0.8))
        created_before = sum(fake.creates_per_prompt.values())
        outcomes = await _resume(provider, fake.url, journal, out, port)
        _check(outcomes, fake)
        assert sum(o.resumed for o in outcomes) >= min(created_before, 1)
        if provider == "piapi":
            # PiAPI's task history finds every create that reached it whose answer was
            # lost. A create killed before its request left (journaled, then waiting for a
            # connection) is in no history: it ends unknown, and is never sent twice.
            for o in outcomes:
                if o.status != "succeeded":
                    prompt = f"crash prompt {o.index}"
                    assert fake.creates_per_prompt.get(prompt, 0) == 0, (o.status, o.error)
                    assert "in flight" in str(o.error)
