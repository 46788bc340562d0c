"""A fork member whose pool process died after it succeeded still closes its fork.

Celery's Redis backend lets one process claim a fork's join once its last member is
counted, and extends that claim by the time publishing the join may take. A process
killed while holding the claim leaves the fork with every member counted and nobody to
send the join; the worker's main process counts the member again later
(app.runtime.step_task.count_member), and must keep looking until the claim is gone.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator

import pytest

from app import RunStatus, StepStatus, submit_workflow
from app.celery_app import celery_app
from app.runtime.state import get_store
from app.runtime.step_task import COUNT_MEMBER_TASK
from app.store.keys import step_key
from tests.support import RedisServer, scaled, wait_for
from tests.test_faults import WorkerProcess
from tests.test_state_machine import definition

CLAIM_SECONDS = 4
"""What is left of the claim a dead process holds: longer than count_member's first look."""


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[WorkerProcess]:
    log = tmp_path_factory.mktemp("lost-members") / "worker.log"
    process = WorkerProcess(log, f"lm-{uuid.uuid4().hex[:6]}", concurrency=2)
    process.ready()
    yield process
    process.stop(signal.SIGKILL)


def test_a_member_lost_while_its_dead_process_held_the_join_claim_still_closes_the_fork(
    worker: WorkerProcess,
) -> None:
    client = get_store().client
    backend = celery_app.backend
    run = submit_workflow(definition(), {"a": 0, "b": 0, "c": 0, "fail": False})

    def waiting_on_h() -> bool:
        steps = run.steps
        return "h" in steps and steps["h"].status is StepStatus.IN_PROGRESS and \
            "b" in steps and steps["b"].status is StepStatus.COMPLETED

    wait_for(waiting_on_h, timeout=scaled(30), what="b done and h waiting")
    parked = json.loads(client.hget(step_key(run.id, "h"), "parked"))
    group = parked["group_id"]
    claim = backend.get_key_for_group(group, ".c")
    counted = backend.get_key_for_group(group, ".d")
    # Given the fork's join claimed by a process that died holding it, its claim
    # extended beyond the first look at the lost member
    backend.client.set(claim, "token-of-a-dead-process", ex=CLAIM_SECONDS)
    # When the last member is counted (the HUMAN step completed: its route goes on), the
    # fork is complete with nobody to send its join
    run.complete_step("h", {"ok": True})
    wait_for(lambda: backend.client.scard(counted) == 2, timeout=scaled(30),
             what="both members counted")
    assert run.status is RunStatus.RUNNING and "j" not in run.steps
    member = next(m.decode() for m in backend.client.smembers(counted)
                  if m.decode().endswith(f":{parked['group_index']}"))
    # and the worker's main process counts that member again, as for one it lost after it
    # succeeded, while the dead process's claim still stands
    celery_app.send_task(COUNT_MEMBER_TASK, args=(member.rsplit(":", 1)[0], group,
                                                  parked["group_index"], parked["chord"],
                                                  None))
    # Then the join is sent once that claim has expired, and the run ends
    assert run.wait(timeout=scaled(CLAIM_SECONDS + 30)) is RunStatus.COMPLETED
    assert run.steps["j"].status is StepStatus.COMPLETED

