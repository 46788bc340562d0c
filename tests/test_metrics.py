"""Prometheus metrics: scraped over HTTP from `baton metrics` after real runs on a real worker.

The counters and histograms live in Redis (app.store.metric_fields); each test starts from
none, so what it scrapes is exactly what it ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import RunStatus, StepStatus, WorkflowRun, submit_workflow
from app.metrics import NAMES, render
from app.queue_variants import queue_lists
from app.runtime.state import get_store
from app.store import now_ms
from app.store.keys import step_key
from app.store.metric_fields import LABEL_CAP, METRICS_PREFIX, OTHER
from tests.support import RedisServer, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
BATON = str(Path(sys.executable).parent / "baton")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def clear_metrics() -> None:
    client = get_store().client
    keys = list(client.scan_iter(match=f"{METRICS_PREFIX}:*"))
    if keys:
        client.delete(*keys)


def parse(text: str) -> Samples:
    """Every sample by (name, labels); the text must pass Prometheus' own parser."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def exporter(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    """`baton metrics --port N` as a process of its own; yields its /metrics URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("metrics") / "exporter.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as sink:
        process = subprocess.Popen([BATON, "metrics", "--port", str(port), "--host",
                                    "127.0.0.1"], env=env, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}/metrics"

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, timeout=30, what="the exporter to serve /metrics")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def workflow(name: str, *tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def test_queue_depth_counts_every_priority_list_of_each_queue(exporter: str) -> None:
    # Given messages waiting on the `late` queue at two priorities, and no worker
    client = get_store().client
    lists = queue_lists("late")
    try:
        client.rpush(lists[0], "a", "b", "c")
        client.rpush(lists[-1], "d", "e")
        # When the exporter is scraped
        samples = scrape(exporter)
    finally:
        client.delete(lists[0], lists[-1])
    # Then the queue shows both lists' messages, and every known queue is listed
    assert value(samples, "baton_queue_messages", queue="late") == 5
    assert value(samples, "baton_queue_messages", queue="baton") == 0
    assert ("baton_queue_messages", frozenset({("queue", "echo")})) in samples


def test_a_steps_queue_wait_runs_from_its_messages_send(
    exporter: str, request: pytest.FixtureRequest
) -> None:
    # Given a run whose first message is queued while no worker runs
    clear_metrics()
    run = submit_workflow(workflow(f"m_wait_{uuid.uuid4().hex[:8]}", {
        "name": "echo", "taskReferenceName": "a", "inputParameters": {"v": 1}}))
    client = get_store().client
    wait_for(lambda: sum(client.llen(name) for name in queue_lists("echo")),
             what="the step's message to be queued")
    seen_queued = now_ms()
    # When a worker starts and runs it
    request.getfixturevalue("worker")
    assert run.wait(timeout=60) is RunStatus.COMPLETED
    # Then the step was scheduled when its message was sent, before it was seen queued,
    # and the histogram holds its wait: from then to its start, after the worker started
    record = client.hgetall(step_key(run.id, "a"))
    scheduled, started = int(record["scheduledTime"]), int(record["startTime"])
    assert scheduled <= seen_queued < started
    samples = scrape(exporter)
    assert value(samples, "baton_step_queue_wait_seconds_sum", transformation="echo",
                 status="COMPLETED") == pytest.approx((started - scheduled) / 1000)
    assert value(samples, "baton_step_queue_wait_seconds_count", transformation="echo",
                 status="COMPLETED") == 1


def test_scraped_counters_and_histograms_match_what_ran(exporter: str, worker: Any) -> None:
    # Given no metrics yet, and runs that complete, fail, and complete after a retry
    clear_metrics()
    tag = uuid.uuid4().hex[:8]
    ok, failing, retried = f"m_ok_{tag}", f"m_fail_{tag}", f"m_retry_{tag}"
    echo = [{"name": "echo", "taskReferenceName": ref, "inputParameters": {"v": ref}}
            for ref in ("a", "b")]
    runs = [submit_workflow(workflow(ok, *echo)) for _ in range(3)]
    runs.append(submit_workflow(workflow(failing, {
        "name": "refuse", "taskReferenceName": "r", "retryCount": 0})))
    runs.append(submit_workflow(workflow(retried, {
        "name": "flaky", "taskReferenceName": "f",
        "inputParameters": {"key": uuid.uuid4().hex, "failures": 1}})))
    # When they have ended and the exporter is scraped
    statuses = [run.wait(timeout=60) for run in runs]
    assert statuses == [RunStatus.COMPLETED] * 3 + [RunStatus.FAILED, RunStatus.COMPLETED]
    samples = scrape(exporter)
    # Then the run counters and the run-duration histogram count each run once
    assert value(samples, "baton_runs_started_total", workflow=ok) == 3
    assert value(samples, "baton_runs_ended_total", workflow=ok, status="COMPLETED") == 3
    assert value(samples, "baton_run_duration_seconds_count", workflow=ok,
                 status="COMPLETED") == 3
    assert value(samples, "baton_run_duration_seconds_bucket", workflow=ok, status="COMPLETED",
                 le="+Inf") == 3
    assert value(samples, "baton_runs_ended_total", workflow=failing, status="FAILED") == 1
    assert value(samples, "baton_runs_ended_total", workflow=retried, status="COMPLETED") == 1
    # and the step histograms count each attempt, by transformation and status
    for name in ("baton_step_duration_seconds_count", "baton_step_queue_wait_seconds_count"):
        assert value(samples, name, transformation="echo", status="COMPLETED") == 6
        assert value(samples, name, transformation="refuse", status="FAILED") == 1
        assert value(samples, name, transformation="flaky", status="FAILED") == 1
        assert value(samples, name, transformation="flaky", status="COMPLETED") == 1
    assert value(samples, "baton_step_retries_total", transformation="flaky") == 1
    assert value(samples, "baton_step_retries_total", transformation="echo") == 0
    # and the sums are the recorded times: run end - start, step start - message sent
    records = [get_store().client.hgetall(step_key(run.id, ref))
               for run in runs[:3] for ref in ("a", "b")]
    took = sum(int(r["endTime"]) - int(r["startTime"]) for r in records) / 1000
    waited = sum(int(r["startTime"]) - int(r["scheduledTime"]) for r in records) / 1000
    assert value(samples, "baton_step_duration_seconds_sum", transformation="echo",
                 status="COMPLETED") == pytest.approx(took)
    assert value(samples, "baton_step_queue_wait_seconds_sum", transformation="echo",
                 status="COMPLETED") == pytest.approx(waited)
    assert all(int(r["scheduledTime"]) <= int(r["startTime"]) + 1000 for r in records)
    run_records = [runs[i].record() for i in range(3)]
    assert all(record["status"] == "COMPLETED" for record in run_records)


def test_a_waiting_human_step_is_counted_until_it_is_completed(
    exporter: str, worker: Any
) -> None:
    # Given a run whose HUMAN step waits
    clear_metrics()
    run = submit_workflow(workflow(f"m_human_{uuid.uuid4().hex[:8]}", {
        "name": "approve", "taskReferenceName": "approve", "type": "HUMAN"}))

    def waiting(run: WorkflowRun = run) -> bool:
        step = run.steps.get("approve")
        return step is not None and step.status is StepStatus.IN_PROGRESS \
            and step.output is not None

    wait_for(waiting, timeout=30, what="the HUMAN step to wait")
    # When it is scraped, then completed and scraped again
    before = scrape(exporter)
    run.complete_step("approve", {"ok": True})
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    after = scrape(exporter)
    # Then it was counted while it waited, and not since
    assert value(before, "baton_steps_waiting", type="HUMAN") == 1
    assert value(after, "baton_steps_waiting", type="HUMAN") == 0
    assert value(after, "baton_step_duration_seconds_count", transformation="approve",
                 status="COMPLETED") == 1


def test_a_step_parked_on_a_flow_limit_is_counted_until_it_runs(
    exporter: str, worker: Any
) -> None:
    # Given a step holding the only slot of `hold`, and another parked until it is free
    key = uuid.uuid4().hex
    client = get_store().client

    def held(tag: str) -> WorkflowRun:
        return submit_workflow(workflow(f"m_limit_{key[:8]}", {
            "name": "hold", "taskReferenceName": "held",
            "inputParameters": {"key": key, "tag": tag},
            "taskDefinition": {"name": "hold", "concurrentExecLimit": 1}}))

    first = held("first")
    wait_for(lambda: client.lrange(f"test:exec:{key}", 0, -1), timeout=30,
             what="the first step to start")
    second = held("second")
    wait_for(lambda: getattr(second.steps.get("held"), "waiting_on", None), timeout=30,
             what="the second step to wait on the limit")
    # When it is scraped, and again once both ran
    parked = scrape(exporter)
    for tag in ("first", "second"):
        client.rpush(f"test:gate:{key}:{tag}", "open")
    assert [first.wait(timeout=60), second.wait(timeout=60)] == [RunStatus.COMPLETED] * 2
    after = scrape(exporter)
    # Then the parked step was counted on its limit while it waited, and not since
    assert value(parked, "baton_steps_waiting_on_limit", limit="hold") == 1
    assert value(after, "baton_steps_waiting_on_limit", limit="hold") == 0


def test_label_values_past_the_cap_are_counted_as_other() -> None:
    # Given no metrics yet
    clear_metrics()
    store = get_store()
    tag = uuid.uuid4().hex[:8]
    names = [f"m_cap_{tag}_{n}" for n in range(LABEL_CAP + 3)]
    # When runs of more workflows than the cap allows are written (ended, from a cache)
    for name in names:
        run_id = str(uuid.uuid4())
        fields = {"workflowId": run_id, "workflowType": name, "version": "1",
                  "status": "COMPLETED", "input": "{}", "output": "{}", "plan": "m-cap",
                  "startTime": "1000", "endTime": "1500"}
        store.create_run(run_id, digest="m-cap", definition_json=json.dumps(workflow(name)),
                         fields=fields, variables={}, idempotency=None)
    samples = parse(render().decode())
    # Then the first LABEL_CAP names are labels of their own, and the rest count as `other`
    started = {dict(labels)["workflow"]: count for (name, labels), count in samples.items()
               if name == "baton_runs_started_total"}
    assert set(started) == {*names[:LABEL_CAP], OTHER}
    assert started[OTHER] == 3
    assert value(samples, "baton_runs_ended_total", workflow=OTHER, status="COMPLETED") == 3
    assert value(samples, "baton_run_duration_seconds_sum", workflow=names[0],
                 status="COMPLETED") == 0.5
    assert value(samples, "baton_run_duration_seconds_bucket", workflow=names[0],
                 status="COMPLETED", le="0.25") == 0
    assert value(samples, "baton_run_duration_seconds_bucket", workflow=names[0],
                 status="COMPLETED", le="0.5") == 1


def test_every_exported_name_follows_prometheus_conventions() -> None:
    # When the metrics are rendered, even before anything ran
    families = list(text_string_to_metric_families(render().decode()))
    # Then every metric is declared, prefixed, and its unit or `_total` ends its name
    assert {f"{f.name}_total" if f.type == "counter" else f.name for f in families} == set(NAMES)
    for family in families:
        assert family.name.startswith("baton_")
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
