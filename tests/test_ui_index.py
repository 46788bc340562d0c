"""The run index: kept by the store's scripts as runs start, pause, end and run again, read in
keyset pages with filters, and trimmed as ended runs expire. Real Redis, real workers."""

from __future__ import annotations

import time
import uuid
from typing import Any

from app import RunStatus, submit_workflow
from app.runtime.state import get_store
from app.store import RunStore
from app.store.index import Cursor, RunQuery
from app.store.keys import (
    RUNS_EXPIRING,
    RUNS_INDEX,
    runs_by_correlation,
    runs_by_status,
    runs_by_workflow,
    runs_by_workflow_status,
)
from tests.support import wait_for


def wf(name: str, *tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def task(ref: str, name: str = "echo", **inputs: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "inputParameters": inputs}


def open_gate(key: str) -> None:
    get_store().client.rpush(f"test:gate:{key}", "open")


def entered(key: str) -> bool:
    return bool(get_store().client.get(f"test:attempts:gate:{key}"))


def ids(store: RunStore, query: RunQuery) -> list[str]:
    return [run["workflowId"] for run in store.query_runs(query).runs]


def indexed_under(run_id: str, status: str, name: str) -> bool:
    client = get_store().client
    return (client.zscore(runs_by_status(status), run_id) is not None
            and client.zscore(runs_by_workflow_status(name, status), run_id) is not None)


def test_a_run_moves_between_status_indexes_as_it_pauses_resumes_and_ends(worker: Any) -> None:
    # Given a run held at its first step
    name, key = f"idx_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    run = submit_workflow(wf(name, task("first", "gate", key=key), task("second")),
                          correlation_id=f"c-{key}")
    wait_for(lambda: entered(key), timeout=30, what="the first step to start")
    assert indexed_under(run.id, "RUNNING", name)
    store = get_store()
    assert ids(store, RunQuery(workflow=name)) == [run.id]
    assert ids(store, RunQuery(correlation_id=f"c-{key}")) == [run.id]

    # When it is paused, then resumed
    run.pause()
    assert indexed_under(run.id, "PAUSED", name) and not indexed_under(run.id, "RUNNING", name)
    assert ids(store, RunQuery(status=RunStatus.PAUSED, workflow=name)) == [run.id]
    run.resume()
    assert indexed_under(run.id, "RUNNING", name) and not indexed_under(run.id, "PAUSED", name)

    # Then it is listed under its end status once it ends, and under RUNNING again on retry
    open_gate(key)
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert indexed_under(run.id, "COMPLETED", name)
    assert not indexed_under(run.id, "RUNNING", name)
    assert ids(store, RunQuery(status=RunStatus.COMPLETED, workflow=name)) == [run.id]
    assert ids(store, RunQuery(status=RunStatus.RUNNING, workflow=name)) == []
    expiring = store.client.zrange(RUNS_EXPIRING, 0, -1)
    assert any(run.id in member for member in expiring)
    run.restart()
    assert not any(run.id in member for member in store.client.zrange(RUNS_EXPIRING, 0, -1))
    wait_for(lambda: entered(key), timeout=30, what="the restarted step to start")
    open_gate(key)
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert indexed_under(run.id, "COMPLETED", name)


def test_a_cancelled_and_a_failed_run_are_listed_by_their_end(worker: Any) -> None:
    name, key = f"idx_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    held = submit_workflow(wf(name, task("first", "gate", key=key)))
    failed = submit_workflow(wf(name, task("bad", "refuse", reason="no")))
    wait_for(lambda: entered(key), timeout=30, what="the held step to start")
    held.cancel()
    assert failed.wait(timeout=30) is RunStatus.FAILED
    store = get_store()
    assert ids(store, RunQuery(status=RunStatus.TERMINATED, workflow=name)) == [held.id]
    assert ids(store, RunQuery(status=RunStatus.FAILED, workflow=name)) == [failed.id]
    assert ids(store, RunQuery(workflow=name)) == [failed.id, held.id]
    open_gate(key)


def _seed(store: RunStore, name: str, count: int, start: int, **extra: str) -> list[str]:
    """Runs written straight through the store's create call, one ms apart (no workers)."""
    made = []
    for i in range(count):
        run_id = str(uuid.uuid4())
        created = str(start + i)
        fields = {"workflowId": run_id, "workflowType": name, "version": "1",
                  "status": "RUNNING", "input": "{}", "correlationId": extra.get("cid", ""),
                  "plan": "seed", "createTime": created, "startTime": created}
        store.create_run(run_id, digest="seed", definition_json="{}", fields=fields,
                         variables={}, idempotency=None)
        # the index scores by the record's creation time, not the clock at the call
        made.append(run_id)
    return made


def test_pages_are_newest_first_and_a_cursor_continues_where_a_page_ended() -> None:
    store = get_store()
    name = f"pages_{uuid.uuid4().hex[:8]}"
    made = _seed(store, name, 25, start=1_000_000)
    newest_first = list(reversed(made))

    first = store.query_runs(RunQuery(workflow=name, limit=10))
    assert [r["workflowId"] for r in first.runs] == newest_first[:10]
    assert first.total == 25 and first.next is not None
    second = store.query_runs(RunQuery(workflow=name, limit=10, after=first.next))
    assert [r["workflowId"] for r in second.runs] == newest_first[10:20]
    third = store.query_runs(RunQuery(workflow=name, limit=10, after=second.next))
    assert [r["workflowId"] for r in third.runs] == newest_first[20:]
    assert third.next is None
    # a cursor survives the text it travels as
    assert Cursor.parse(str(first.next)) == first.next


def test_time_window_and_correlation_filters() -> None:
    store = get_store()
    name = f"window_{uuid.uuid4().hex[:8]}"
    made = _seed(store, name, 10, start=2_000_000)
    tagged = _seed(store, name, 3, start=2_000_100, cid=f"order-{name}")
    window = RunQuery(workflow=name, since_ms=2_000_003, until_ms=2_000_006)
    assert ids(store, window) == list(reversed(made[3:7]))
    assert store.query_runs(window).total == 4
    assert ids(store, RunQuery(correlation_id=f"order-{name}")) == list(reversed(tagged))
    assert ids(store, RunQuery(correlation_id=f"order-{name}",
                               status=RunStatus.COMPLETED)) == []
    assert ids(store, RunQuery(correlation_id=f"order-{name}", workflow=name,
                               status=RunStatus.RUNNING)) == list(reversed(tagged))


def test_an_ended_run_leaves_every_index_once_its_keys_expire() -> None:
    # Given a run that ended with a retention of one second
    store = get_store()
    short = RunStore(store.client, 1)
    name = f"expiry_{uuid.uuid4().hex[:8]}"
    run_id = _seed(short, name, 1, start=int(time.time() * 1000), cid=f"c-{name}")[0]
    assert short.end_run(run_id, "COMPLETED", {})
    assert store.client.zscore(runs_by_status("COMPLETED"), run_id) is not None

    # When its keys have expired and the index is trimmed
    wait_for(lambda: not store.client.exists(f"baton:run:{{{run_id}}}"), timeout=10,
             what="the run's keys to expire")
    wait_for(lambda: store.trim_run_index(1000) >= 0 and
             store.client.zscore(RUNS_INDEX, run_id) is None, timeout=10,
             what="the trim to take the run off")

    # Then no index lists it
    for key in (runs_by_status("COMPLETED"), runs_by_workflow(name),
                runs_by_workflow_status(name, "COMPLETED"), runs_by_correlation(f"c-{name}")):
        assert store.client.zscore(key, run_id) is None, key
    assert not any(run_id in m for m in store.client.zrange(RUNS_EXPIRING, 0, -1))


def test_a_reader_takes_off_a_run_whose_record_has_gone() -> None:
    store = get_store()
    name = f"gone_{uuid.uuid4().hex[:8]}"
    kept, lost = _seed(store, name, 2, start=3_000_000)
    store.client.delete(f"baton:run:{{{lost}}}")
    assert ids(store, RunQuery(workflow=name)) == [kept]
    assert store.client.zscore(runs_by_workflow(name), lost) is None


def test_runs_written_before_the_index_are_indexed_on_request() -> None:
    # Given a run whose index entries are missing (written before the index existed)
    store = get_store()
    name = f"old_{uuid.uuid4().hex[:8]}"
    run_id = _seed(store, name, 1, start=4_000_000, cid=f"c-{name}")[0]
    # a store without the end hooks: the seeded run has no definition to fail with
    assert RunStore(store.client, store.retention).end_run(run_id, "FAILED", None, reason="old")
    for key in (RUNS_INDEX, runs_by_status("FAILED"), runs_by_workflow(name),
                runs_by_workflow_status(name, "FAILED"), runs_by_correlation(f"c-{name}")):
        store.client.zrem(key, run_id)
    assert ids(store, RunQuery(workflow=name)) == []

    # When the store indexes its runs
    assert store.index_existing_runs() >= 1

    # Then the run is listed by every filter again, and noted to expire
    assert ids(store, RunQuery(workflow=name, status=RunStatus.FAILED)) == [run_id]
    assert ids(store, RunQuery(correlation_id=f"c-{name}")) == [run_id]
    assert any(run_id in m for m in store.client.zrange(RUNS_EXPIRING, 0, -1))
