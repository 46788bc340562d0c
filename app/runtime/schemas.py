"""Enforcing a definition's schemas on the data of its runs.

Where Conductor checks: a run's input (its inputTemplate filled in) when it is created, a
step's resolved input before its work runs and its output when the work returns (the
task's taskDefinition schemas), and the run's output when it would complete (the
workflow's outputSchema). A workflow's schemas hold unless it sets enforceSchema false;
a task's only when its taskDefinition sets enforceSchema true (Conductor's defaults).

Validators are compiled once per process for each (plan digest, task ref, field): plans
are content-addressed, so a digest names its schemas for good. No Redis here.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from app.compiler.plan import Plan, StepSpec
from app.dsl.model import SchemaDef
from app.dsl.schemas import compile_schema, violations
from app.runtime.runs import InvalidInput
from app.store import RefusedOutput, StepStatus

_WORKFLOW: Final = ""
"""The ref the workflow's own schemas are cached under (a task's ref is never empty)."""
_MOST_VALIDATORS: Final = 4096


class SchemaViolation(InvalidInput):
    """Data that breaks an enforced inputSchema or outputSchema; the message names its path."""


class _Validators:
    """(digest, ref, field) -> compiled validator, least recently used first out."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, str, str], Validator] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str], schema: SchemaDef) -> Validator:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        found = compile_schema(schema)
        with self._lock:
            self._kept[key] = found
            if len(self._kept) > _MOST_VALIDATORS:
                self._kept.popitem(last=False)
        return found


_validators = _Validators()


def check_run_input(plan: Plan, run_input: str | Mapping[str, Any]) -> None:
    """SchemaViolation unless the run input (as JSON text or data) conforms to the
    workflow's inputSchema."""
    definition = plan.definition
    if definition.input_schema is None or not definition.enforce_schema:
        return
    value = json.loads(run_input) if isinstance(run_input, str) else run_input
    _check(plan, _WORKFLOW, "inputSchema", definition.input_schema, value, "input")


def check_step_input(plan: Plan, spec: StepSpec, value: Any) -> None:
    """SchemaViolation unless a step's resolved input conforms to its task's inputSchema."""
    definition = spec.task.task_definition
    if definition is None or definition.input_schema is None or not definition.enforce_schema:
        return
    _check(plan, spec.ref, "inputSchema", definition.input_schema, value, "input")


def check_step_output(plan: Plan, spec: StepSpec, value: Any, status: StepStatus) -> None:
    """SchemaViolation unless the output of a step that completes conforms to its task's
    outputSchema (an output recorded while the step goes on waiting is not its last)."""
    definition = spec.task.task_definition
    if definition is None or definition.output_schema is None or not definition.enforce_schema \
            or status is not StepStatus.COMPLETED:
        return
    _check(plan, spec.ref, "outputSchema", definition.output_schema, value, "output")


def checked_run_output(plan: Plan, output: Any) -> Any:
    """The run's output, or a RefusedOutput (the run ends FAILED, the reason naming the
    path) when it breaks the workflow's outputSchema."""
    definition = plan.definition
    if definition.output_schema is None or not definition.enforce_schema:
        return output
    try:
        _check(plan, _WORKFLOW, "outputSchema", definition.output_schema, output, "output")
    except SchemaViolation as exc:
        return RefusedOutput(output, f"{type(exc).__name__}: {exc}")
    return output


def _check(plan: Plan, ref: str, field: str, schema: SchemaDef, value: Any, where: str) -> None:
    validator = _validators.get((plan.digest, ref, field), schema)
    owner = f"taskDefinition.{field}" if ref != _WORKFLOW else field
    try:
        found = violations(validator, value, where)
    except Unresolvable as exc:  # refused at validation; a backstop, never the network
        found = [f"{where}: the schema's reference {exc} does not resolve"]
    if found:
        raise SchemaViolation(f"{'; '.join(found)} ({owner} '{schema.name}')")
