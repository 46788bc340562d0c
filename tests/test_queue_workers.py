"""Workers started per queue with the Procfile's own commands, as separate processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import RunStatus, submit_workflow
from tests.support import RedisServer, wait_for

ROOT = Path(__file__).resolve().parents[1]


def procfile_commands() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def start_process(
    process_type: str, copy: int, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start one copy of a Procfile process the way a process manager does (PORT per copy)."""
    env = {**os.environ, "PORT": str(5000 + 100 * copy), "BATON_LOG_LEVEL": "WARNING",
           "BATON_CONCURRENCY": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           **(extra_env or {})}
    with log.open("ab") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            ["bash", "-c", f"exec {procfile_commands()[process_type]}"],
            cwd=ROOT, env=env, start_new_session=True, stdout=sink, stderr=sink,
        )


@pytest.fixture(scope="module")
def queue_workers(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    import app

    logs = tmp_path_factory.mktemp("workers")
    copies = [("worker_baton", 0), ("worker_encode", 0), ("worker_encode", 1),
              ("worker_deploy", 0)]
    processes = {f"{name}.{copy}": start_process(name, copy, logs / f"{name}.{copy}.log")
                 for name, copy in copies}
    try:
        expected = {"baton.5000", "encode.5000", "encode.5100", "deploy.5000"}

        def all_answer() -> bool:
            replies = app.celery.control.ping(timeout=0.5)
            names = {name.split("@")[0] for reply in replies for name in reply}
            return expected <= names

        wait_for(all_answer, timeout=60, what="the per-queue workers to answer a ping")
        yield processes
    finally:
        for process in processes.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            process.wait(timeout=30)


def test_procfile_has_a_worker_for_every_queue() -> None:
    from app import registry
    from app.config import get_settings

    commands = procfile_commands()
    bundled = {t.queue for t in registry.transformations().values()
               if t.func.__module__.startswith("tasks.")}
    for queue in [get_settings().control_queue, *sorted(bundled)]:
        assert f"-Q {queue} " in commands[f"worker_{queue}"]


def test_seed_workflow_runs_on_workers_started_per_queue(
    queue_workers: dict[str, subprocess.Popen[bytes]],
) -> None:
    run = submit_workflow(str(ROOT / "workflows" / "encode_and_deploy.json"),
                          input={"fileLocation": "s3://in/movie.mov"})

    assert run.wait(timeout=60) is RunStatus.COMPLETED
    assert run.result()["cdn_url"].endswith("/movie.mp4")
    steps = run.steps
    assert steps["encode"].worker is not None and steps["encode"].worker.startswith("encode.")
    assert steps["d1"].worker is not None and steps["d1"].worker.startswith("deploy.")


def test_a_queue_scaled_to_two_processes_has_both_take_work(
    queue_workers: dict[str, subprocess.Popen[bytes]],
) -> None:
    seed = str(ROOT / "workflows" / "encode_and_deploy.json")
    runs = [submit_workflow(seed, input={"fileLocation": f"s3://in/{i}.mov"}) for i in range(30)]

    for run in runs:
        assert run.wait(timeout=60) is RunStatus.COMPLETED
    encoders = {run.steps["encode"].worker for run in runs}

    assert {w.split("@")[0] for w in encoders if w} == {"encode.5000", "encode.5100"}
