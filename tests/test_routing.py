"""Task domains, isolation groups and run priority, on real worker processes.

Workers consume only some queue variants (`echo:gpu`, `echo+grp`), so a step that is
sent elsewhere stays queued, which the tests read off Redis's lists.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import RunStatus, submit_workflow
from app.errors import DefinitionError
from app.queue_variants import SEPARATOR, active_queues, pick_domain, queue_length, queue_lists
from app.routing import InvalidRouting, broker_priority
from app.runtime.state import get_store
from tests.support import CeleryWorker, RedisServer, scaled, wait_for

VARIANTS = ["echo:gpu", "echo+grp", "faulty:gpu"]


def client() -> Any:
    return get_store().client


def echo(ref: str, **extra: Any) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": ref, "inputParameters": {"ref": ref}, **extra}


def wf(*tasks: dict[str, Any], name: str = "routed") -> dict[str, Any]:
    return {"name": name, "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def switched() -> dict[str, Any]:
    """A transformation before, inside (compiled when the switch runs) and after a switch."""
    return wf(echo("first"), {
        "name": "pick", "taskReferenceName": "pick", "type": "SWITCH",
        "evaluatorType": "value-param", "expression": "which",
        "inputParameters": {"which": "a"},
        "decisionCases": {"a": [echo("inside")]}}, echo("last"))


def clear(*queues: str) -> None:
    client().delete(*(key for queue in queues for key in queue_lists(queue)))


@pytest.fixture(scope="module")
def variant_worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[CeleryWorker]:
    """Control and I/O queues, and only variants of the transformation queues."""
    logs = tmp_path_factory.mktemp("routing")
    worker = CeleryWorker(logs / "variants.log", ["baton", "baton.io", *VARIANTS],
                          concurrency=2, prefix="variants").ready()
    active_queues.forget()
    yield worker
    worker.stop()


def finish(run: Any) -> None:
    wait_for(lambda: run.status != RunStatus.RUNNING, timeout=scaled(30),
             what=f"run {run.id} to end")
    assert run.status == RunStatus.COMPLETED, run.status


def test_a_run_with_a_domain_goes_to_its_variant_queue(variant_worker: CeleryWorker) -> None:
    clear("echo")
    run = submit_workflow(switched(), task_to_domain={"echo": "gpu"})
    finish(run)
    assert set(run.steps) >= {"first", "inside", "last"}
    assert get_store().get_run_fields(run.id, "taskToDomain") == {
        "taskToDomain": '{"echo":"gpu"}'}


def test_without_the_domain_the_step_waits_on_the_plain_queue(
    variant_worker: CeleryWorker,
) -> None:
    clear("echo")
    run = submit_workflow(wf(echo("first")))
    wait_for(lambda: queue_length(client(), "echo") == 1, timeout=scaled(10),
             what="the step to be queued on 'echo'")
    assert run.status == RunStatus.RUNNING
    assert queue_length(client(), "echo:gpu") == 0
    run.cancel("nobody consumes 'echo'")
    clear("echo")


def test_star_sends_every_transformation_to_the_domain(variant_worker: CeleryWorker) -> None:
    finish(submit_workflow(switched(), task_to_domain={"*": "gpu"}))


def test_a_task_own_entry_wins_over_star(variant_worker: CeleryWorker) -> None:
    clear("echo")
    run = submit_workflow(wf(echo("first")), task_to_domain={"*": "gpu", "echo": "cpu"})
    wait_for(lambda: queue_length(client(), "echo:cpu") == 1, timeout=scaled(10),
             what="the step to be queued on 'echo:cpu'")
    run.cancel("nobody consumes 'echo:cpu'")
    clear("echo:cpu")


def test_a_domain_list_takes_the_first_domain_a_worker_consumes(
    variant_worker: CeleryWorker,
) -> None:
    active_queues.forget()
    assert pick_domain("echo", ["cpu", "gpu", "NO_DOMAIN"]) == "gpu"
    assert pick_domain("echo", ["cpu", "NO_DOMAIN"]) is None  # nobody: the plain queue
    assert pick_domain("echo", ["cpu", "tpu"]) == "tpu"  # nobody: the last one
    assert pick_domain("echo", ["tpu"]) == "tpu"
    finish(submit_workflow(wf(echo("first")), task_to_domain={"echo": "cpu,gpu,NO_DOMAIN"}))


def test_a_sub_workflow_inherits_or_overrides_the_domains(variant_worker: CeleryWorker) -> None:
    child = wf(echo("inner"), name="child")
    inherits = wf({"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
                   "subWorkflowParam": {"name": "child", "workflowDefinition": child}})
    finish(submit_workflow(inherits, task_to_domain={"echo": "gpu"}))

    overrides = wf({"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
                    "subWorkflowParam": {"name": "child", "workflowDefinition": child,
                                         "taskToDomain": {"echo": "${workflow.input.d}"}}})
    run = submit_workflow(overrides, {"d": "gpu"})  # the parent has no domain
    finish(run)
    child_id = run.steps["sub"].output["subWorkflowId"]
    assert get_store().get_run_fields(child_id, "taskToDomain")["taskToDomain"] == \
        '{"echo":"gpu"}'


def test_an_isolation_group_routes_to_its_variant(variant_worker: CeleryWorker) -> None:
    isolated = echo("first", taskDefinition={"name": "echo", "isolationGroupId": "grp"})
    finish(submit_workflow(wf(isolated)))


def test_bad_routing_is_refused_with_its_path() -> None:
    with pytest.raises(InvalidRouting, match=r"^taskToDomain\.echo: domain 'g pu' may hold"):
        submit_workflow(wf(echo("first")), task_to_domain={"echo": "g pu"})
    with pytest.raises(InvalidRouting, match=r"^priority: must be a whole number from 0 to 99"):
        submit_workflow(wf(echo("first")), priority=100)
    switch = {"name": "s", "taskReferenceName": "s", "type": "SWITCH",
              "evaluatorType": "value-param", "expression": "x", "decisionCases": {},
              "taskDefinition": {"name": "s", "isolationGroupId": "grp"}}
    with pytest.raises(DefinitionError, match=r"tasks\[0\]\.taskDefinition\.isolationGroupId: "
                                              r"not supported for a SWITCH task"):
        submit_workflow(wf(switch))
    sub = {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
           "subWorkflowParam": {"name": "child", "priority": 150}}
    with pytest.raises(DefinitionError, match=r"tasks\[0\]\.subWorkflowParam\.priority: must"):
        submit_workflow(wf(sub))


def test_every_message_of_a_run_carries_its_priority(variant_worker: CeleryWorker) -> None:
    """The step after a completed one is sent by the worker (the chain): it keeps the
    run's priority. Nobody consumes plain 'faulty', so it stays on its priority list."""
    clear("faulty")
    step = {"name": "refuse", "taskReferenceName": "second", "inputParameters": {}}
    run = submit_workflow(wf(echo("first"), step), task_to_domain={"echo": "gpu"},
                          priority=50)
    listed = f"faulty{SEPARATOR}{broker_priority(50)}"
    wait_for(lambda: client().llen(listed) == 1, timeout=scaled(10),
             what=f"the second step to be queued on {listed!r}")
    assert queue_length(client(), "faulty") == 1
    run.cancel("nobody consumes 'faulty'")
    clear("faulty")


BACKLOG = 20


def test_a_high_priority_run_overtakes_a_backlog(
    variant_worker: CeleryWorker, tmp_path: Path
) -> None:
    """Runs of two steps queued while no worker consumes 'echo'; the last one submitted
    has priority 90. A one-process worker then serves it first."""
    clear("echo")
    two_steps = wf(echo("first"), echo("second"), name="backlog")
    low = [submit_workflow(two_steps) for _ in range(BACKLOG)]
    high = submit_workflow(two_steps, priority=90)
    assert queue_length(client(), "echo") == BACKLOG + 1
    started = time.monotonic()
    worker = CeleryWorker(tmp_path / "echo.log", ["echo"], concurrency=1, prefix="one")
    try:
        runs = [*low, high]
        wait_for(lambda: all(r.status != RunStatus.RUNNING for r in runs),
                 timeout=scaled(60), what="the backlog to complete")
    finally:
        worker.stop()
    ended = sorted(runs, key=lambda r: int(get_store().get_run_fields(r.id, "endTime")
                                           ["endTime"]))
    rank = ended.index(high) + 1
    print(f"high-priority run submitted {BACKLOG + 1}th of {BACKLOG + 1} completed "
          f"{rank}th ({time.monotonic() - started:.1f}s for the backlog)")
    assert all(r.status == RunStatus.COMPLETED for r in runs)
    assert rank <= 2, rank  # without priority it would complete last


def test_the_command_line_takes_domains_and_priority() -> None:
    from click.exceptions import Exit

    from app.cli.routing import parse_routing
    from app.cli.workers import worker_command

    assert parse_routing(("echo=gpu", "*= cpu,NO_DOMAIN"), 7) == {
        "task_to_domain": {"echo": "gpu", "*": "cpu,NO_DOMAIN"}, "priority": 7}
    assert parse_routing((), None) == {"task_to_domain": None, "priority": None}
    with pytest.raises((SystemExit, Exit)):
        parse_routing(("echo",), None)
    command = worker_command(["echo:gpu+grp"], 1, "INFO", "5000")
    assert command[command.index("-Q") + 1] == "echo:gpu+grp"
    assert command[command.index("-n") + 1] == "echo-gpu-grp.5000@%h"
