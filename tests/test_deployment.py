"""Procfile and compose.yml, cross-checked against the registry (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app import registry
from app.celery_app import CONTROL_PREFIX, all_queues
from app.config import get_settings
from tests.test_queue_workers import procfile_commands

ROOT = Path(__file__).resolve().parents[1]
QUEUE_OPTION = re.compile(r"-Q\s+(\S+)")


def bundled_queues() -> set[str]:
    """Baton's control and I/O queues and the queues of the transformations it ships in
    `tasks/`."""
    shipped = {t.queue for t in registry.transformations().values()
               if t.func.__module__.split(".")[0] == "tasks"}
    settings = get_settings()
    return {settings.control_queue, settings.io_queue, *shipped}


def process_name(queue: str) -> str:
    """`worker_<queue>`, Baton's own prefix left out: `baton.io` is served by `worker_io`."""
    return "worker_" + queue.removeprefix(CONTROL_PREFIX)


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def queues_named(command: str) -> set[str]:
    return {q for match in QUEUE_OPTION.findall(command) for q in match.split(",")}


def test_every_queue_has_a_procfile_entry_and_nothing_else_is_named() -> None:
    commands = procfile_commands()
    named = {q for c in commands.values() for q in queues_named(c)}
    assert named == bundled_queues()
    for queue in bundled_queues():
        assert queues_named(commands[process_name(queue)]) == {queue}
        assert f"-n {queue}.${{PORT:-0}}@%h" in commands[process_name(queue)]


def test_every_queue_has_a_compose_service_that_waits_for_a_healthy_redis() -> None:
    services = compose()["services"]
    workers = {name: s for name, s in services.items() if name.startswith("worker_")}
    assert set(workers) == {process_name(queue) for queue in bundled_queues()}
    for queue in bundled_queues():
        service = workers[process_name(queue)]
        assert queues_named(service["command"]) == {queue}
        assert f"-n {queue}.%h@%h" in service["command"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["deploy"]["replicas"] >= 1
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_http_and_event_are_routed_to_the_io_queue_and_every_worker_list_has_it() -> None:
    from app.celery_app import route_task
    from app.compiler.canvas import CONTROL_TASKS

    settings = get_settings()
    assert settings.io_queue == "baton.io"
    for type_name in ("HTTP", "EVENT"):
        assert route_task(CONTROL_TASKS[type_name]) == {"queue": settings.io_queue}
    for type_name in ("JOIN", "SWITCH", "INLINE", "DO_WHILE"):
        assert route_task(CONTROL_TASKS[type_name]) == {"queue": settings.control_queue}
    assert all_queues()[:2] == [settings.control_queue, settings.io_queue]
    assert bundled_queues() <= set(all_queues())


def test_compose_redis_keeps_data_and_never_evicts() -> None:
    redis = compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert redis["healthcheck"]["test"][-1] == "ping"


def test_flower_requires_basic_auth_from_the_environment() -> None:
    flower = compose()["services"]["flower"]
    assert "${FLOWER_BASIC_AUTH:?" in flower["environment"]["FLOWER_BASIC_AUTH"]
    assert "flower" in flower["command"]
    assert "--basic-auth=${FLOWER_BASIC_AUTH:?" in procfile_commands()["flower"]
