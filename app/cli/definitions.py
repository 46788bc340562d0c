"""`baton validate`, `baton graph` and `baton schema`: work on definitions, not runs.

Only `graph --run` reads Redis (for the run's step statuses); the rest needs no server.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from app.cli.common import (
    EXIT_FAILED,
    EXIT_INVALID,
    emit_json,
    error_line,
    fail,
    guard,
    load_checked,
    option,
    redis_option,
    strict_option,
    use_redis,
    warning_line,
)
from app.client import WorkflowRun
from app.dsl.load import load_definition
from app.dsl.model import TASK_TYPES, WorkflowDef
from app.errors import DefinitionError
from app.graph import FORMATS, build_graph, render
from app.loader import ensure_loaded
from app.runtime.state import get_store

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@click.command()
@click.argument("files", nargs=-1, required=True)
@strict_option
def validate(files: tuple[str, ...], strict: bool) -> None:
    """Check definitions; print each problem as `baton: path: message` (exit 2 on any).

    Warnings (`warning: path: message`) name what Conductor accepts but is likely a
    mistake, such as a ${ref...} naming an unknown task (read as null); they leave the
    exit code 0 unless --strict.

    \b
    Example:
      baton validate workflows/*.json
    """
    bad = False
    guard(ensure_loaded)
    for file in files:
        where = f"{file}: " if len(files) > 1 else ""
        try:
            _, warnings = load_checked(file, strict=strict or None)
        except DefinitionError as exc:
            bad = True
            for problem in exc.problems:
                click.echo(error_line(problem, where), err=True)
        else:
            for warning in warnings:
                click.echo(f"{where}{warning_line(warning)}", err=True)
            count = len(warnings)
            noted = f" ({count} warning{'s' if count > 1 else ''})" if count else ""
            click.echo(f"{file}: ok{noted}")
    if bad:
        sys.exit(EXIT_INVALID)


@click.command()
@click.argument("file", required=False)
@option("--format", "graph_format", type=click.Choice(FORMATS), default="mermaid",
        show_default=True, envvar="BATON_GRAPH_FORMAT", help="Mermaid flowchart or Graphviz DOT.")
@option("--run", "run_id", metavar="RUN_ID", envvar="BATON_GRAPH_RUN",
        help="Colour each task by the status of its step in this run; without FILE, "
        "draw the run's own definition.")
@redis_option
def graph(file: str | None, graph_format: str, run_id: str | None, redis_url: str | None) -> None:
    """Draw a workflow: a node per task, edges in the order they run.

    Fork branches lead to their join, SWITCH cases are labelled edges and a DO_WHILE
    body is a subgraph, whether or not Baton runs the operator yet. Render the output
    with `dot -Tsvg` or any Mermaid viewer (GitHub shows ```mermaid blocks).

    \b
    Example:
      baton graph workflows/encode_and_deploy.json --format dot | dot -Tsvg > flow.svg
    """
    if file is None and run_id is None:
        fail("graph: give a definition FILE, a --run RUN_ID, or both", EXIT_INVALID)
    definition = guard(lambda: load_definition(file)) if file is not None else None
    statuses: dict[str, str] | None = None
    if run_id is not None:
        use_redis(redis_url, "graph --run")
        fields = guard(lambda: get_store().get_run(run_id))
        if fields is None:
            fail(f"no run {run_id} (never submitted, or expired)", EXIT_FAILED)
        steps = guard(lambda: WorkflowRun(run_id).steps)
        statuses = {ref: step.status.value for ref, step in steps.items()}
        name = fields.get("workflowType", "")
        if definition is None:
            definition = _run_definition(run_id, fields.get("plan", ""))
        elif definition.name != name:
            fail(f"run {run_id} is of workflow '{name}', not '{definition.name}' ({file})",
                 EXIT_INVALID)
    assert definition is not None  # one of FILE and --run was given
    click.echo(render(build_graph(definition), graph_format, statuses), nl=False)


def _run_definition(run_id: str, digest: str) -> WorkflowDef:
    text = guard(lambda: get_store().get_definition(digest))
    if text is None:
        fail(f"the definition of run {run_id} is no longer stored; pass its FILE", EXIT_FAILED)
    return guard(lambda: load_definition(json.loads(text)))


@click.command()
def schema() -> None:
    """Print the JSON Schema of workflow definitions, for editors.

    \b
    Example (VS Code: map it to your definitions in "json.schemas"):
      baton schema > baton-workflow.schema.json
    """
    emit_json(definition_schema())


def definition_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of Conductor's WorkflowDef as Baton reads it."""
    schema = WorkflowDef.model_json_schema(by_alias=True)
    # the model checks `type` in a validator (for its did-you-mean hint), which pydantic
    # cannot express; the same list as an enum lets editors complete it
    task_type = schema["$defs"]["WorkflowTask"]["properties"]["type"]
    task_type["enum"] = sorted(TASK_TYPES)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "Conductor workflow definition (schemaVersion 2)",
        **schema,
    }
