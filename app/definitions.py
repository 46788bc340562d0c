"""Workflow definitions registered in Redis by name and version.

SUB_WORKFLOW, START_WORKFLOW and `submit_workflow("name", version=...)` find them here.
A run never reads the registry after it starts: it keeps the snapshot it started with.
"""

from __future__ import annotations

import json

from app import registry
from app.compiler.plan import build_plan
from app.dsl.load import DefinitionSource, load_definition
from app.dsl.model import WorkflowDef
from app.dsl.validate import parse_definition
from app.errors import DefinitionError, Problem
from app.runtime.keys import WORKFLOWS_INDEX, workflow_key
from app.runtime.state import get_store


def register_workflow(definition: DefinitionSource) -> WorkflowDef:
    """Validate a definition and keep it under its name and version (replacing that version)."""
    workflow = load_definition(definition)
    build_plan(workflow, registry.transformations())
    text = json.dumps(workflow.to_json_dict(), separators=(",", ":"))
    store = get_store()
    pipe = store.client.pipeline(transaction=True)
    pipe.hset(workflow_key(workflow.name), str(workflow.version), text)
    pipe.sadd(WORKFLOWS_INDEX, workflow.name)
    store.execute(pipe)
    return workflow


def get_workflow(name: str, version: int | None = None) -> WorkflowDef:
    """A registered definition: the given version, or the highest one."""
    store = get_store()
    versions = store.guard(lambda: store.client.hgetall(workflow_key(name)))
    if not versions:
        known = sorted(store.guard(lambda: store.client.smembers(WORKFLOWS_INDEX)))
        hint = f" (registered: {', '.join(known[:10])})" if known else " (none is registered)"
        raise DefinitionError([Problem(name, f"no workflow of this name is registered{hint}")])
    chosen = str(version) if version is not None else max(versions, key=int)
    if chosen not in versions:
        listed = ", ".join(sorted(versions, key=int))
        raise DefinitionError([Problem(name, f"has no version {version} (versions: {listed})")])
    return parse_definition(json.loads(versions[chosen]))


def list_workflows() -> dict[str, list[int]]:
    """Every registered workflow name with its versions."""
    store = get_store()
    names = sorted(store.guard(lambda: store.client.smembers(WORKFLOWS_INDEX)))
    pipe = store.client.pipeline(transaction=False)
    for name in names:
        pipe.hkeys(workflow_key(name))
    return {name: sorted(int(v) for v in versions)
            for name, versions in zip(names, store.execute(pipe), strict=True)}
