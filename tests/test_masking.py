"""maskedFields: steps compute with the real values; every reader of the run sees "***".

Given a run of a workflow with `maskedFields: ["password"]` on real workers, the step that
uses the password gets it (its output is computed from it), while the client's records and
steps, `baton status`, `baton run`, Celery's result backend and the task events Flower
reads never show it.
"""

from __future__ import annotations

import ast
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from app import WorkflowFailed, submit_workflow
from app.celery_app import celery_app
from app.cli import main
from app.runtime.masking import MASK, MaskedError, RunMask
from app.runtime.state import get_store
from app.store.keys import PREFIX
from tests.support import scaled, wait_for

SECRET = "hunter2"
NESTED = "nested-secret"
GIVEN = {"user": "ada", "password": SECRET, "profile": {"password": NESTED, "theme": "dark"}}


def definition(masked: list[str], *tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "masked_login", "version": 1, "schemaVersion": 2, "maskedFields": masked,
            "tasks": list(tasks), **fields}


LOGIN = {"name": "echo", "taskReferenceName": "login", "inputParameters": {
    "user": "${workflow.input.user}",
    "password": "${workflow.input.password}",
    "copy": "${workflow.input.password}",  # another name: masked by its text
    "note": "pw=${workflow.input.password}!",  # embedded in a longer string
    "profile": "${workflow.input.profile}",  # the name nested one level down
}}
FORK = {"name": "fork", "taskReferenceName": "fan", "type": "FORK_JOIN", "forkTasks": [
    [{"name": "echo", "taskReferenceName": "left", "inputParameters": {
        "password": "${login.output.password}"}}],
    [{"name": "jq", "taskReferenceName": "check", "type": "JSON_JQ_TRANSFORM",
      "inputParameters": {"pw": "${login.output.copy}", "queryExpression":
                          "{length: (.pw | length), "
                          "reversed: (.pw | explode | reverse | implode)}"}}],
]}
JOIN = {"name": "join", "taskReferenceName": "fan_join", "type": "JOIN",
        "joinOn": ["left", "check"]}
OUTPUT = {"user": "${login.output.user}", "password": "${left.output.password}",
          "length": "${check.output.result.length}", "reversed": "${check.output.result.reversed}"}
REFUSE = {"name": "refuse", "taskReferenceName": "refuse",
          "inputParameters": {"reason": "wrong password ${workflow.input.password}"},
          "taskDefinition": {"name": "refuse", "retryCount": 1, "retryDelaySeconds": 0}}


class TaskEvents:
    """The task events Flower would receive, captured from the broker as Flower does."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        with celery_app.connection_for_read() as connection:
            self._receiver = celery_app.events.Receiver(
                connection, handlers={"*": self.seen.append})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self) -> TaskEvents:
        self._thread.start()
        with celery_app.events.default_dispatcher() as dispatcher:
            def heard() -> bool:
                dispatcher.send("task-probe", uuid="probe")
                return any(e.get("type") == "task-probe" for e in self.seen)

            wait_for(heard, timeout=10, interval=0.1, what="the event receiver")
        return self

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=scaled(10))

    def of(self, task_ids: set[str]) -> list[dict[str, Any]]:
        return [event for event in self.seen if event.get("uuid") in task_ids]


@pytest.fixture(scope="module")
def events(worker: Any) -> Iterator[TaskEvents]:
    captured = TaskEvents().start()
    yield captured
    captured.stop()


def celery_keys_text() -> str:
    """Every Redis key that is not the run store's (results, chord counters, queues,
    unacknowledged messages), with its value, as one text."""
    client = get_store().client
    found: list[str] = []
    for key in client.scan_iter(count=1000):
        if str(key).startswith(f"{PREFIX}:"):
            continue
        found.append(f"{key} {_value(client, key, str(client.type(key)))}")
    return "\n".join(found)


def _value(client: Any, key: str, kind: str) -> Any:
    if kind == "string":
        return client.get(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "set":
        return sorted(client.smembers(key))
    if kind == "zset":
        return client.zrange(key, 0, -1)
    return client.xrange(key) if kind == "stream" else None


def shown(value: Any) -> str:
    return json.dumps(value, default=str)


def test_the_step_computes_with_the_password_and_no_reader_shows_it(
    events: TaskEvents, tmp_path: Path
) -> None:
    run = submit_workflow(definition(["password"], LOGIN, FORK, JOIN, outputParameters=OUTPUT),
                          GIVEN)

    output = run.result(timeout=scaled(30))

    # the steps got the real value: the jq step's output is computed from it...
    assert output == {"user": "ada", "password": MASK, "length": 7, "reversed": "2retnuh"}
    # ...and the run store keeps it as it is
    kept = get_store().get_steps(run.id)
    assert json.loads(kept["login"]["input"])["password"] == SECRET
    assert json.loads(kept["left"]["output"]) == {"password": SECRET}

    steps = run.steps
    login = steps["login"]
    assert login.input == {"user": "ada", "password": MASK, "copy": MASK, "note": f"pw={MASK}!",
                           "profile": {"password": MASK, "theme": "dark"}}
    assert login.output == login.input
    assert steps["check"].input["pw"] == MASK
    record = run.record()
    assert record["input"] == {"user": "ada", "password": MASK,
                               "profile": {"password": MASK, "theme": "dark"}}
    assert record["maskedFields"] == ["password"]

    status_text = CliRunner().invoke(main, ["status", run.id])
    status_json = CliRunner().invoke(main, ["status", run.id, "--json"])
    listed = CliRunner().invoke(main, ["list", "--json"])
    assert status_text.exit_code == status_json.exit_code == listed.exit_code == 0
    document = json.loads(status_json.output)
    assert document["input"]["password"] == MASK
    assert [s["ref"] for s in document["steps"]][:1] == ["login"]

    # every task of the run, a control task's (baton.jq, baton.join) too, as Flower sees it:
    # its arguments are pointers and its result None
    task_ids = {step.task_id for step in steps.values() if step.task_id}
    assert len(task_ids) == 4
    wait_for(lambda: {e["uuid"] for e in events.of(task_ids) if e["type"] == "task-succeeded"}
             == task_ids, what="every task's task-succeeded event")
    received = [e for e in events.of(task_ids) if e["type"] == "task-received"]
    assert {e["name"] for e in received} == {"tasks.echo", "baton.jq", "baton.join"}
    pointers = [tuple(ast.literal_eval(e["args"])) for e in received]
    assert sorted(ref for _, ref, _ in pointers) == ["check", "fan_join", "left", "login"]
    assert {run_id for run_id, _, _ in pointers} == {run.id}
    for where in (shown({ref: vars(step) for ref, step in steps.items()}), shown(record),
                  status_text.output, status_json.output, listed.output, shown(events.seen),
                  celery_keys_text()):
        assert SECRET not in where and NESTED not in where


def test_a_step_error_showing_the_password_is_masked_in_records_results_and_events(
    events: TaskEvents,
) -> None:
    run = submit_workflow(definition(["password"], REFUSE), GIVEN)

    with pytest.raises(WorkflowFailed) as failed:
        run.result(timeout=scaled(30))

    # the step was given the real value: it is in the error the run store keeps
    kept = json.loads(get_store().get_steps(run.id)["refuse"]["error"])
    assert kept["message"] == f"wrong password {SECRET}"
    step = run.steps["refuse"]
    assert step.error is not None and step.error["message"] == f"wrong password {MASK}"
    assert SECRET not in step.error["traceback"]
    assert [a["error"]["message"] for a in step.failed_attempts] == \
        [f"wrong password {MASK}"] * 2
    assert str(failed.value).endswith(f"Refused: wrong password {MASK}")
    assert failed.value.error is not None and SECRET not in shown(failed.value.error)
    status_text = CliRunner().invoke(main, ["status", run.id])
    assert f"Refused: wrong password {MASK}" in status_text.output

    # what Flower shows of the retry and the failure: the same type, the masked message
    assert step.task_id is not None
    wait_for(lambda: "task-failed" in {e["type"] for e in events.of({step.task_id})},
             timeout=10, what="the task-failed event")
    seen = {e["type"]: e for e in events.of({step.task_id})}
    assert f"Refused('wrong password {MASK}')" in seen["task-retried"]["exception"]
    assert seen["task-failed"]["exception"] == f"Refused('wrong password {MASK}')"
    result = json.loads(get_store().client.get(f"celery-task-meta-{step.task_id}"))
    assert result["status"] == "FAILURE"
    assert result["result"]["exc_message"] == [f"wrong password {MASK}"]
    for where in (shown(vars(step)), shown(run.record()), status_text.output,
                  str(failed.value), shown(events.seen), celery_keys_text()):
        assert SECRET not in where


def test_an_empty_list_masks_nothing(worker: Any) -> None:
    run = submit_workflow(definition([], LOGIN), GIVEN)

    assert run.result(timeout=scaled(30))["password"] == SECRET
    assert run.steps["login"].input["profile"] == GIVEN["profile"]
    record = run.record()
    assert record["input"] == GIVEN
    assert "maskedFields" not in record
    status_json = CliRunner().invoke(main, ["status", run.id, "--json"])
    assert json.loads(status_json.output)["steps"][0]["output"]["password"] == SECRET


def test_baton_run_prints_the_output_masked(worker: Any, tmp_path: Path) -> None:
    file = tmp_path / "masked.json"
    file.write_text(json.dumps(definition(["password"], LOGIN)))

    result = CliRunner().invoke(main, ["run", str(file), "--input", json.dumps(GIVEN)])

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["password"] == MASK
    assert SECRET not in result.output


def test_short_values_are_masked_under_their_name_only() -> None:
    mask = RunMask(frozenset({"pin", "token"}), ("s3cr3t-token", "123456"))

    assert mask.value({"pin": "12", "other": "12", "list": [{"token": {"a": 1}}],
                       "code": 123456, "text": "token=s3cr3t-token"}) == \
        {"pin": MASK, "other": "12", "list": [{"token": MASK}], "code": MASK,
         "text": f"token={MASK}"}


def test_an_exception_that_cannot_be_made_again_is_shown_as_masked_error() -> None:
    mask = RunMask(frozenset({"password"}), (SECRET,))
    error = UnicodeDecodeError("utf-8", SECRET.encode(), 0, 1, f"bad {SECRET}")

    masked = mask.exception(error)

    assert isinstance(masked, MaskedError)
    assert SECRET not in repr(masked) and "UnicodeDecodeError" in str(masked)
    plain = KeyError("other")
    assert mask.exception(plain) is plain
