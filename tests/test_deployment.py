"""Procfile, compose.yml and deploy/, cross-checked against the registry and the metrics the
exporter exports (no Docker engine needed)."""

from __future__ import annotations

import json
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


METRIC_NAME = re.compile(r"\bbaton_[a-z_]+\b")
HISTOGRAM_SERIES = re.compile(r"_(bucket|count|sum)$")


def mounted(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts: path inside the container -> file or folder of the repo."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def published_port(service: dict[str, Any]) -> int:
    (mapping,) = service["ports"]
    outside, inside = mapping.split(":")
    assert outside == inside
    return int(inside)


def test_the_metrics_exporter_serves_where_prometheus_scrapes() -> None:
    from app.cli.metrics import DEFAULT_PORT

    services = compose()["services"]
    exporter = services["metrics"]
    port = published_port(exporter)
    assert exporter["command"] == f"baton metrics --port {port}"
    assert exporter["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert exporter["depends_on"]["redis"]["condition"] == "service_healthy"
    assert port == DEFAULT_PORT
    assert procfile_commands()["metrics"] == f"baton metrics --port ${{BATON_METRICS_PORT:-{port}}}"
    prometheus = services["prometheus"]
    config_path = mounted(prometheus)["/etc/prometheus/prometheus.yml"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load(config_path.read_text())
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]
    assert targets == [f"metrics:{port}"]
    assert published_port(prometheus) == 9090


def test_grafana_provisions_the_dashboard_on_the_prometheus_of_compose() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    mounts = mounted(grafana)
    assert all(path.exists() for path in mounts.values()), mounts
    assert "${GRAFANA_ADMIN_PASSWORD:?" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    provisioning = mounts["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == f"http://prometheus:{published_port(services['prometheus'])}"
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "baton.yml").read_text())["providers"]
    dashboards = [target for target in mounts
                  if target.startswith(provider["options"]["path"] + "/")]
    assert [mounts[t].name for t in dashboards] == ["baton-dashboard.json"]
    dashboard = json.loads(mounts[dashboards[0]].read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    assert uids == {source["uid"]}


def test_the_dashboard_queries_only_metrics_the_exporter_exports() -> None:
    from app.metrics import NAMES

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "baton-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"]]
    used = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert used, "the dashboard queries no metric"
    for name in used:
        assert name in NAMES or HISTOGRAM_SERIES.sub("", name) in NAMES, name
    # every metric is on the dashboard
    shown = {HISTOGRAM_SERIES.sub("", name) if name not in NAMES else name for name in used}
    assert shown == set(NAMES)
