"""`baton doctor` finds the runs that nothing carries on, and --repair sends them on."""

from __future__ import annotations

import json
import uuid
from typing import Any

from click.testing import CliRunner

from app import RunStatus, WorkflowRun, submit_workflow
from app.cli import main
from app.dsl.validate import parse_definition
from app.runtime import doctor
from app.runtime.runs import create_run
from app.runtime.state import get_store
from tests.support import wait_for


def wf(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "doctored", "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def task(ref: str, name: str = "echo", **inputs: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "inputParameters": inputs}


def stuck_ids() -> set[str]:
    return {found.run_id for found in doctor.find_stuck(min_idle_seconds=0)}


def test_a_run_whose_message_was_lost_is_found_and_repaired(worker: Any) -> None:
    # recorded RUNNING, its first message never sent: as if the broker lost it
    lost = create_run(parse_definition(wf(task("a", v=1), task("b", v="${a.output.v}"))),
                      {})
    run = WorkflowRun(lost.run_id)
    assert run.id in stuck_ids()

    result = CliRunner().invoke(main, ["doctor", "--idle", "0", "--json"])
    assert result.exit_code == 1
    found = [d for d in json.loads(result.output) if d["runId"] == run.id]
    assert found and found[0]["status"] == "RUNNING" and found[0]["lastStep"] is None

    repaired = CliRunner().invoke(main, ["doctor", "--idle", "0", "--repair", "--json"])
    assert repaired.exit_code == 0, repaired.output
    assert run.result(timeout=30) == {"v": 1}
    assert run.id not in stuck_ids()


def test_a_run_lost_after_some_steps_goes_on_without_running_them_again(worker: Any) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(wf(task("once", "flaky", key=key, failures=0), task("gated", "gate",
                                                                             key=key)))
    wait_for(lambda: get_store().client.get(f"test:attempts:gate:{key}"), timeout=30,
             what="the second step to start")
    assert run.id not in stuck_ids()  # its message is in flight
    # the gated step's delivery is lost: its worker died and took the message with it
    get_store().client.delete("unacked")
    wait_for(lambda: run.id in stuck_ids(), timeout=30, what="the run to be found stuck")

    assert doctor.repair(run.id) == "gated"  # the first step that had not ended
    get_store().client.rpush(f"test:gate:{key}", "open")
    get_store().client.rpush(f"test:gate:{key}", "open")  # the lost delivery's, still waiting
    assert run.result(timeout=30) == {}
    assert get_store().client.get(f"test:attempts:{key}") == "1"


def test_waiting_paused_and_ended_runs_are_not_stuck(worker: Any) -> None:
    human = submit_workflow(wf({"name": "h", "taskReferenceName": "h", "type": "HUMAN"}))
    timed = submit_workflow(wf({"name": "w", "taskReferenceName": "w", "type": "WAIT",
                                "inputParameters": {"duration": "1h"}}))
    done = submit_workflow(wf(task("a")))
    assert done.wait(timeout=30) is RunStatus.COMPLETED
    wait_for(lambda: "h" in human.steps and "w" in timed.steps, timeout=30,
             what="both waits to start")
    timed.pause()

    assert not {human.id, timed.id, done.id} & stuck_ids()
    timed.cancel()
    human.cancel()
