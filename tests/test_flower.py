"""Flower, started with the Procfile's command, shows a run's tasks under their own names."""

from __future__ import annotations

import base64
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import submit_workflow
from tests.support import RedisServer, free_port, wait_for
from tests.test_queue_workers import ROOT, start_process

AUTH = "watcher:s3cret"


class Flower:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, auth: str | None = AUTH) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path)
        if auth:
            token = base64.b64encode(auth.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body = response.read().decode()
                return response.status, json.loads(body) if body.startswith(("{", "[")) else body
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (urllib.error.URLError, ConnectionError):
            return 0, None


@pytest.fixture(scope="module")
def flower(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    port = free_port()
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    process = start_process("flower", 0, log, {"FLOWER_PORT": str(port),
                                               "FLOWER_BASIC_AUTH": AUTH})
    client = Flower(port)
    try:
        wait_for(lambda: client.get("/healthcheck", auth=None)[0] == 200, timeout=60,
                 what=f"Flower to answer (log: {log})")
        yield client
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_flower_refuses_requests_without_credentials(flower: Flower) -> None:
    assert flower.get("/api/tasks", auth=None)[0] == 401
    assert flower.get("/api/tasks", auth="watcher:wrong")[0] == 401


def test_a_runs_tasks_are_found_in_flower_by_run_id(flower: Flower, worker: Any) -> None:
    seed = Path(ROOT / "workflows" / "encode_and_deploy.json")

    def finished_tasks() -> tuple[str, dict[str, Any]] | None:
        # Flower only sees events sent after it connected: submit until it sees one run
        run = submit_workflow(str(seed), input={"fileLocation": "s3://in/movie.mov"})
        run.wait(timeout=30)

        def found() -> dict[str, Any] | None:
            status, tasks = flower.get(f"/api/tasks?search={run.id}")
            if status != 200 or not isinstance(tasks, dict):
                return None
            states = {t["name"]: t["state"] for t in tasks.values()}
            return tasks if states == {"tasks.encode": "SUCCESS",
                                       "tasks.deploy": "SUCCESS"} else None

        try:
            return run.id, wait_for(found, timeout=5, what="Flower to list the run's tasks")
        except AssertionError:
            return None

    run_id, tasks = wait_for(finished_tasks, timeout=60, what="Flower to see a whole run")

    refs = {"tasks.encode": "'encode'", "tasks.deploy": "'d1'"}
    for task in tasks.values():
        assert f"'{run_id}'" in task["args"]
        assert refs[task["name"]] in task["args"]
        assert task["worker"]
