"""A real ``redis-server`` for the Redis tests: started on a free loopback port in
``tmp_path`` with an append-only file, stopped (or killed and restarted) by the test.

Without the binary the tests skip, saying why, unless the environment variable ``CI`` is
set: CI must run them, so there a missing ``redis-server`` fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; `kill` and `start` again keep the port and the data."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--protected-mode",
                "yes",
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited at start:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer within 10 s")
            time.sleep(0.02)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server of this test's own (data in ``tmp_path``)."""
    if REDIS_SERVER is None:
        if os.environ.get("CI"):
            pytest.fail(
                "redis-server is not installed, and CI must run the Redis tests "
                "(.ci/run installs the Debian package redis-server)"
            )
        pytest.skip(
            "redis-server is not installed (apt-get install redis-server); CI runs these tests"
        )
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(REDIS_SERVER, workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def namespace() -> str:
    """A fresh key namespace."""
    return f"t{uuid.uuid4().hex[:10]}"
