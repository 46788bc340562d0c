"""Read a definition from what a user hands over: a model, a dict, JSON/YAML text or a file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from app.dsl.model import WorkflowDef
from app.dsl.validate import parse_definition
from app.errors import DefinitionError, Problem

DefinitionSource = WorkflowDef | Mapping[str, Any] | str | Path


def load_definition(source: DefinitionSource) -> WorkflowDef:
    """The definition as a model; DefinitionError for anything unreadable or malformed."""
    if isinstance(source, WorkflowDef):
        return source
    if isinstance(source, Mapping):
        return parse_definition(source)
    if isinstance(source, Path) or not _looks_like_text(source):
        return parse_definition(_read_file(Path(source)))
    return parse_definition(_parse_text(source, "definition"))


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
