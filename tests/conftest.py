"""Test harness: a private redis-server on a free port and real Celery workers on it.

The server is started before any test module imports `app`, because the Celery app and
the run store read REDIS_URL once, at import. Without a redis-server binary the tests
are skipped on a laptop but fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import CI, RedisServer, redis_binary, slowness

_server: RedisServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _server
    binary = redis_binary()
    if binary is None:
        if CI:
            raise pytest.UsageError("redis-server is not on PATH (.ci/run installs it)")
        return
    _server = RedisServer(binary)
    _server.start()
    os.environ["REDIS_URL"] = _server.url
    os.environ["BATON_TRANSFORMATIONS"] = "tests.transformations,tests.conformance_steps"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test's time limit, scaled by how loaded the machine is (tests.support)."""
    factor = slowness()
    default = float(config.getini("timeout") or 0)
    for item in items:
        marker = item.get_closest_marker("timeout")
        base = float(marker.args[0]) if marker and marker.args else default
        if base:
            item.add_marker(pytest.mark.timeout(base * factor), append=False)  # closest wins


def pytest_report_header(config: pytest.Config) -> str:
    return f"baton: deadlines scaled x{slowness():.2f} for this machine's load"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    if _server is None:
        pytest.skip("no redis-server binary on PATH")
    return _server


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer) -> Iterator[Any]:
    """An in-process Celery worker (threads) consuming every queue of the registry."""
    from celery.contrib.testing.worker import start_worker

    import app
    from app.celery_app import all_queues

    queues = all_queues()
    with start_worker(
        app.celery,
        pool="threads",
        concurrency=4,
        queues=queues,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as controller:
        yield controller
