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
from app.runtime.state import get_store


def register_workflow(definition: DefinitionSource) -> WorkflowDef:
    """Validate a definition and keep it under its name and version (replacing that version)."""
    workflow = load_definition(definition)
    build_plan(workflow, registry.transformations())
    text = json.dumps(workflow.to_json_dict(), separators=(",", ":"))
    get_store().register_workflow(workflow.name, workflow.version, text)
    return workflow


def get_workflow(name: str, version: int | None = None) -> WorkflowDef:
    """A registered definition: the given version, or the highest one."""
    store = get_store()
    versions = store.workflow_versions(name)
    if not versions:
        known = store.workflow_names()
        hint = f" (registered: {', '.join(known[:10])})" if known else " (none is registered)"
        raise DefinitionError([Problem(name, f"no workflow of this name is registered{hint}")])
    chosen = str(version) if version is not None else max(versions, key=int)
    if chosen not in versions:
        listed = ", ".join(sorted(versions, key=int))
        raise DefinitionError([Problem(name, f"has no version {version} (versions: {listed})")])
    return parse_definition(json.loads(versions[chosen]))


def list_workflows() -> dict[str, list[int]]:
    """Every registered workflow name with its versions."""
    return get_store().workflow_catalogue()
