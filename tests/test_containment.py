"""Four ways to hang a worker, sent at once, against workers laid out as the Procfile does.

A jq program that never ends, a script whose result never finishes converting, a JSONPath
regex that backtracks for ever on its input, and an HTTP server that trickles one byte at
a time: each run ends FAILED within its limit plus 5 s, and an ordinary workflow sent
right after them completes as fast as on idle workers, give or take one script limit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from app import RunStatus, StepStatus, submit_workflow
from app.celery_app import all_queues
from app.config import get_settings
from app.loader import ensure_loaded
from tests.support import CeleryWorker, RedisServer, scaled, serving

SCRIPT_LIMIT = 2.0  # the default
HTTP_DEADLINE = 3.0
SECRET = "containment-secret-in-the-workers-environment"
pytestmark = pytest.mark.timeout(180)


class _Trickle(BaseHTTPRequestHandler):
    stop = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            while not self.stop.wait(0.5):
                self.wfile.write(b".")
                self.wfile.flush()
        except OSError:
            pass  # the client gave up

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def trickle() -> Iterator[str]:
    with serving(_Trickle) as url:
        yield f"{url}/slow"
        _Trickle.stop.set()


@pytest.fixture(scope="module")
def procfile_workers(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[list[CeleryWorker]]:
    """Control and transformation queues on one worker (-c 2), I/O on one of its own."""
    ensure_loaded()
    settings = get_settings()
    env = {"BATON_HTTP_DEADLINE": str(HTTP_DEADLINE), "BATON_HTTP_ALLOW": "127.0.0.1",
           "CONTAINMENT_SECRET": SECRET}
    logs = tmp_path_factory.mktemp("containment")
    main = [queue for queue in all_queues() if queue != settings.io_queue]
    workers = [CeleryWorker(logs / "main.log", main, concurrency=2, prefix="main", env=env),
               CeleryWorker(logs / "io.log", [settings.io_queue], prefix="io", env=env)]
    for worker in workers:
        worker.ready()
    yield workers
    for worker in workers:
        worker.stop()


def ordinary() -> dict[str, Any]:
    return {"name": "ordinary", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "echo", "taskReferenceName": "first", "inputParameters": {"n": 1}},
        {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN", "forkTasks": [
            [{"name": "echo", "taskReferenceName": "left", "inputParameters": {"n": 2}}],
            [{"name": "inline", "taskReferenceName": "right", "type": "INLINE",
              "inputParameters": {"evaluatorType": "javascript", "expression": "$.n + 1",
                                  "n": "${first.output.n}"}}]]},
        {"name": "join", "taskReferenceName": "join", "type": "JOIN",
         "joinOn": ["left", "right"]},
        {"name": "echo", "taskReferenceName": "last",
         "inputParameters": {"sum": "${right.output.result}"}}],
        "outputParameters": {"sum": "${last.output.sum}"}}


def hostile(uri: str) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Name -> (definition, input) of each way to hang a worker."""
    def one(task: dict[str, Any]) -> dict[str, Any]:
        return {"name": f"hostile_{task['taskReferenceName']}", "version": 1,
                "schemaVersion": 2, "tasks": [task]}

    return {
        "jq": (one({"name": "jq", "taskReferenceName": "jq", "type": "JSON_JQ_TRANSFORM",
                    "inputParameters": {"queryExpression": "last(range(1e12))"}}), {}),
        "toJSON": (one({"name": "js", "taskReferenceName": "js", "type": "INLINE",
                        "inputParameters": {"evaluatorType": "javascript",
                                            "expression": "({toJSON() { while (true) {} }})"}}),
                   {}),
        "regex": (one({"name": "echo", "taskReferenceName": "regex", "inputParameters": {
            "found": "${workflow.input.${workflow.input.q}}"}}),
            {"q": "items[?(@.n =~ /(a+)+b/)]", "items": [{"n": "a" * 64}]}),
        "http": (one({"name": "http", "taskReferenceName": "http", "type": "HTTP",
                      "inputParameters": {"http_request": {"uri": uri, "method": "GET"}}}),
                 {}),
    }


def timed(definition: dict[str, Any]) -> float:
    started = time.monotonic()
    run = submit_workflow(definition)
    assert run.result(timeout=scaled(30)) == {"sum": 2}
    return time.monotonic() - started


def test_four_ways_to_hang_a_worker_end_failed_and_hold_nothing_up(
    procfile_workers: list[CeleryWorker], trickle: str
) -> None:
    normal = min(timed(ordinary()) for _ in range(3))

    started = time.monotonic()
    runs = {name: submit_workflow(definition, given)
            for name, (definition, given) in hostile(trickle).items()}
    after = timed(ordinary())
    # two pool processes: at worst one waits out a script's limit behind the hostile runs
    assert after <= normal + scaled(SCRIPT_LIMIT + 1.0), (after, normal)

    limits = {"jq": SCRIPT_LIMIT, "toJSON": SCRIPT_LIMIT, "regex": 0.0, "http": HTTP_DEADLINE}
    for name, run in runs.items():
        status = run.wait(timeout=scaled(limits[name] + 5) + (time.monotonic() - started))
        ended = time.monotonic() - started
        if name == "regex":
            # RE2 cannot backtrack: the filter matches nothing and the step completes
            assert status is RunStatus.COMPLETED, run.record()
            assert run.steps["regex"].input == {"found": []}
            continue
        assert status is RunStatus.FAILED, (name, run.record())
        assert ended <= scaled(limits[name] + 5), (name, ended)
        step = next(iter(run.steps.values()))
        assert step.status in (StepStatus.FAILED, StepStatus.TIMED_OUT)
        assert "limit" in str(step.error) or "deadline" in str(step.error), step.error
    assert all(worker.alive for worker in procfile_workers)
    for worker in procfile_workers:
        assert SECRET not in Path(worker.log).read_text(errors="replace")
    assert os.environ.get("CONTAINMENT_SECRET") is None
