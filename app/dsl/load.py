"""Read a definition from what a user hands over: a model, a dict, JSON/YAML text or a file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.dsl.model import WorkflowDef
from app.dsl.validate import is_strict, parse_definition
from app.errors import DefinitionError, Problem
from app.registry import Transformation

DefinitionSource = WorkflowDef | Mapping[str, Any] | str | Path


@dataclass(frozen=True)
class Loaded:
    """A definition as read, and what reading it found that Conductor accepts."""

    definition: WorkflowDef
    warnings: tuple[Problem, ...] = ()


def load_definition(source: DefinitionSource) -> WorkflowDef:
    """The definition as a model; DefinitionError for anything unreadable or malformed."""
    return read_definition(source).definition


def read_definition(
    source: DefinitionSource,
    transformations: Mapping[str, Transformation] | None = None,
    *,
    strict: bool | None = None,
) -> Loaded:
    """The definition and the warnings of reading it; DefinitionError lists every problem.

    A workflow execution (what Conductor's `GET /workflow/{id}` returns) is read as the
    definition it carries, with a warning (an error in strict mode), or refused in one line
    when it carries none. With schema errors, `transformations` and `strict` are used to
    check the rest of the definition as check_definition would.
    """
    if isinstance(source, WorkflowDef):
        return Loaded(source)
    if isinstance(source, Mapping):
        data: Mapping[str, Any] = source
    elif isinstance(source, Path) or not _looks_like_text(source):
        data = _read_file(Path(source))
    else:
        data = _parse_text(source, "definition")
    warnings: tuple[Problem, ...] = ()
    execution = _execution(data)
    if execution is not None:
        data, warning = execution
        warnings = (warning,)
        if is_strict(strict):
            try:
                parse_definition(data, transformations, strict=True)
            except DefinitionError as exc:
                raise DefinitionError([warning, *exc.problems]) from None
            raise DefinitionError([warning])
    return Loaded(parse_definition(data, transformations, strict=strict), warnings)


def _execution(data: Mapping[str, Any]) -> tuple[Mapping[str, Any], Problem] | None:
    """The definition a workflow execution carries, and a warning that says so.

    A definition has no `workflowId` (nor any field Conductor gives an execution only), so
    this never mistakes a definition for an execution. DefinitionError for an execution
    that carries no definition.
    """
    run_id = data.get("workflowId")
    if not isinstance(run_id, str) or "status" not in data:
        return None
    what = f"this is a workflow execution (workflowId {run_id}, status {data['status']})"
    inner = data.get("workflowDefinition")
    if isinstance(inner, Mapping):
        return inner, Problem("", f'{what}, not a definition: read the definition under '
                                  '"workflowDefinition" instead')
    name = data.get("workflowName") or data.get("workflowType") or "<name>"
    version = data.get("workflowVersion") or data.get("version")
    where = f"/metadata/workflow/{name}" + (f"?version={version}" if version else "")
    raise DefinitionError([Problem("", f'{what}, not a definition, and it has no '
                                       f'"workflowDefinition": export the definition '
                                       f"itself (Conductor's GET {where})")])


def _looks_like_text(source: str) -> bool:
    stripped = source.lstrip()
    return not stripped or stripped.startswith(("{", "[")) or "\n" in stripped


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError([Problem(str(path), "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError([Problem(str(path), f"cannot read: {exc}")]) from None
    return _parse_text(text, str(path), yaml_first=path.suffix in (".yaml", ".yml"))


def _parse_text(text: str, where: str, yaml_first: bool = False) -> Any:
    if not yaml_first:
        try:
            data = json.loads(text)
        except RecursionError:
            raise DefinitionError([Problem(where, "nested too deeply to parse")]) from None
        except json.JSONDecodeError as exc:
            if text.lstrip().startswith(("{", "[")):
                message = f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
                raise DefinitionError([Problem(where, message)]) from None
        else:
            return _expect_object(data, where)
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise DefinitionError([Problem(where, "nested too deeply to parse")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        if mark is not None and problem:
            # str(exc) spans several lines (context, excerpt, caret): keep the line one
            message = f"malformed YAML at line {mark.line + 1} column {mark.column + 1}: {problem}"
        else:
            message = f"malformed YAML: {exc}"
        raise DefinitionError([Problem(where, message)]) from None
    return _expect_object(data, where)


# What a parsed JSON or YAML document is, in JSON's terms (an empty YAML document is null).
_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _expect_object(data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        kind = "null" if data is None else _KINDS.get(type(data), type(data).__name__)
        raise DefinitionError([Problem(where, f"a definition is a JSON object, not {kind}")])
    return data
