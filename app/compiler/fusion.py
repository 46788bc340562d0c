"""Which steps may share one message: step fusion and folded joins.

A Celery chain sends one message per step, and each costs a broker round trip, a queue
wait and the worker's bookkeeping around it. Steps of one transformation that follow
each other in a sequence run one after the other anyway, on the same queue: they may as
well run in the message of the first, each still claimed, recorded, retried, timed out,
held back and redelivered on its own by the step runner (app.runtime.fusion). Likewise a
fork's JOIN runs in the message of the step after it, as the body of the fork's chord
(what `chain(a, group(b, c), d)` makes of `d` in Celery), rather than as a control task
of its own whose only work is to read the branches and send that step.

A fused message is the first step's signature with the refs that follow it in its
`fused` keyword argument, so Flower shows every step a message runs. Only what changes
nothing but speed is fused:

- steps of a registered transformation (type SIMPLE) with the same task name, hence the
  same queue, the same policy and the same Celery options;
- with no limit of their own that Celery applies per message (a start delay, a time
  limit, a poll timeout) and no taskDefinition routing (namespace, isolation group);
- whose input does not read `${CPEWF_TASK_ID}`: fused steps share their message's Celery
  task id (the `taskId` on their records, which links each to its message in Flower);
- in one sequence of one segment, so a fused message is bounded as a route is;
- a JOIN (not an EXCLUSIVE_JOIN, not one with a timeout of its own) is folded into a
  next step that may be fused.

Parallel work is not fused: the branches of a fork are separate messages, but for forks
wider than the workers can take at once, whose one-step branches go in batches
(app.compiler.batches) by the same key.
`BATON_FUSE_STEPS=0` turns fusion off where routes are compiled (clients and workers);
a workflow turns it off for itself with `metadata: {"baton": {"fuseSteps": false}}`.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

from app.compiler.plan import Plan, Stage, StepSpec, StepStage
from app.config import get_settings
from app.dsl.expressions import TASK_ID_ROOT
from app.registry import TASK_PREFIX
from app.timeouts import signature_options

FUSED: Final = "fused"
"""The keyword argument listing the refs a message runs after its own."""


def fusing(plan: Plan) -> bool:
    """Whether routes of this plan fuse steps (the setting and the workflow's metadata)."""
    if not get_settings().fuse_steps:
        return False
    own: Any = plan.definition.metadata.get("baton")
    return not (isinstance(own, dict) and own.get("fuseSteps") is False)


def fusion_key(plan: Plan, stage: Stage) -> str | None:
    """The Celery task a step stage may share a message on, None if it runs on its own."""
    if not isinstance(stage, StepStage):
        return None
    return step_fusion_key(plan.steps[stage.ref])


def step_fusion_key(spec: StepSpec) -> str | None:
    """`fusion_key` of one step's spec, in the plan or defined at run time."""
    task = spec.task
    if spec.type != "SIMPLE" or task.start_delay:
        return None
    if TASK_ID_ROOT in spec.inputs.roots():
        return None  # each step's own task id, as Conductor gives it
    if signature_options(spec.policy_overrides):
        return None  # time limits and expiry apply to a whole message
    definition = task.task_definition
    if definition is not None and (definition.execution_name_space
                                   or definition.isolation_group_id):
        return None  # routed per step (app.queue_variants)
    return TASK_PREFIX + spec.name


def foldable_join(plan: Plan, join_ref: str) -> bool:
    """Whether a fork's JOIN may run in the message of the step after it."""
    spec = plan.steps[join_ref]
    return spec.type == "JOIN" and not spec.policy_overrides.get("timeout_seconds")
