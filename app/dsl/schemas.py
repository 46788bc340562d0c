"""JSON Schemas of definitions (inputSchema, outputSchema): checking them, compiling them,
and describing where data breaks them.

A SchemaDef is honoured when it is of type JSON and holds its schema inline in `data`; one
named for a schema registry (name/version, externalRef) or of type AVRO or PROTOBUF is
refused, as Baton has no registry. The schema is checked against the metaschema of its
dialect (`$schema`, default Draft 2020-12, the dialect of Conductor's examples), and every
`$ref` must resolve inside the schema itself: nothing is ever fetched. Pure: no Celery, no
Redis; the runtime caches what `compile_schema` builds (app.runtime.schemas).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any, Final

from jsonschema import (
    Draft3Validator,
    Draft4Validator,
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
)
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from referencing import Registry, Resource, Specification
from referencing.exceptions import PointerToNowhere, Unresolvable
from referencing.jsonschema import specification_with

from app.dsl.model import SchemaDef, WorkflowDef, WorkflowTask

_DEFAULT: Final[type[Validator]] = Draft202012Validator
_DIALECTS: Final[dict[str, type[Validator]]] = {
    str(cls.META_SCHEMA.get("$id") or cls.META_SCHEMA["id"]).rstrip("#"): cls
    for cls in (Draft3Validator, Draft4Validator, Draft6Validator, Draft7Validator,
                Draft201909Validator, Draft202012Validator)
}
"""Dialect URI (no trailing '#') -> its validator."""
_FIELDS: Final = ("inputSchema", "outputSchema")
_LITERALS: Final = frozenset({"enum", "const", "default", "examples"})
"""Keywords whose values are data, not schemas: a `$ref` inside them is not a reference."""
_REFS: Final = ("$ref", "$dynamicRef")
_MOST_ERRORS: Final = 10
_MOST_CHARS: Final = 300
"""A message quotes the value it is about; a large value is cut to keep it one line."""

# Types whose output the step runner does not produce when the step ends: Baton records it
# later (a WAIT or HUMAN completed from outside, a sub-workflow's, a loop's last iteration)
# or the type has no step of its own (a static fork), so its output cannot be checked there.
_OUTPUT_LATER: Final = frozenset({"WAIT", "HUMAN", "SUB_WORKFLOW", "DO_WHILE", "FORK_JOIN"})


class _Remote(Exception):
    """A reference to a schema outside the one given (Baton fetches nothing)."""


def _refuse_retrieval(uri: str) -> Resource[Any]:
    raise _Remote(uri)


def workflow_schema_problems(definition: WorkflowDef) -> Iterator[tuple[str, str]]:
    """(field path, message) for each enforced workflow schema Baton cannot honour."""
    if not definition.enforce_schema:
        return  # a schema that is not enforced only documents the data
    for name, schema in zip(_FIELDS, (definition.input_schema, definition.output_schema),
                            strict=True):
        if schema is not None:
            for where, message in schema_problems(schema):
                yield (f"{name}{where}", message)


def task_schema_problems(task: WorkflowTask) -> Iterator[tuple[str, str]]:
    """(field path, message) for each enforced schema of a task's taskDefinition that Baton
    cannot honour, its own problems and those of its place (a task type whose input or
    output no step sees)."""
    definition = task.task_definition
    if definition is None or not definition.enforce_schema:
        return
    for name, schema in zip(_FIELDS, (definition.input_schema, definition.output_schema),
                            strict=True):
        if schema is None:
            continue
        where = f"taskDefinition.{name}"
        if task.type == "FORK_JOIN" or (name == "outputSchema" and task.type in _OUTPUT_LATER):
            yield (where, f"not supported for a {task.type} task (its "
                          f"{name[:-6]} is not seen by a step of its own); remove it or set "
                          "taskDefinition.enforceSchema false")
            continue
        for path, message in schema_problems(schema):
            yield (f"{where}{path}", message)


def schema_problems(schema: SchemaDef) -> list[tuple[str, str]]:
    """(path inside the SchemaDef, message) for each reason it cannot be enforced."""
    found: list[tuple[str, str]] = []
    if schema.type != "JSON":
        found.append((".type", f"{schema.type} schemas are not supported (Baton validates "
                               "JSON Schema only); use type JSON with the schema in data, "
                               "or set enforceSchema false"))
    if schema.external_ref is not None:
        found.append((".externalRef", "not supported (Baton has no schema registry to fetch "
                                      "it from); remove it and give the schema in data"))
    if schema.data is None:
        if schema.type == "JSON" and schema.external_ref is None:
            found.append(("", f"schema '{schema.name}' has no data: a schema kept in a "
                              "registry by name and version is not supported (Baton has no "
                              "schema registry); give the JSON Schema inline as data, or set "
                              "enforceSchema false"))
        return found
    if schema.type == "JSON":
        text = json.dumps(schema.data, sort_keys=True, separators=(",", ":"))
        found += [(f".data{path}", message) for path, message in _json_schema_problems(text)]
    return found


def _dialect(data: dict[str, Any]) -> tuple[type[Validator] | None, str | None]:
    """The validator of the schema's `$schema` (Draft 2020-12 without one), or why none."""
    named = data.get("$schema")
    if named is None:
        return _DEFAULT, None
    if not isinstance(named, str):
        return None, f"must be a string naming a JSON Schema dialect, not {_kind(named)}"
    found = _DIALECTS.get(named.rstrip("#"))
    if found is None:
        known = ", ".join(sorted(_DIALECTS))
        return None, f"unknown JSON Schema dialect '{named}' (known: {known})"
    return found, None


@lru_cache(maxsize=1024)
def _json_schema_problems(text: str) -> tuple[tuple[str, str], ...]:
    """The problems of a schema (JSON text, keys sorted), kept: checking one against the
    2020-12 metaschema takes milliseconds, and a definition is checked at every submit."""
    data = json.loads(text)
    dialect, why = _dialect(data)
    if dialect is None:
        return ((".$schema", why or ""),)
    meta = validator_for(dialect.META_SCHEMA, default=dialect)
    checker = meta(dialect.META_SCHEMA, format_checker=meta.FORMAT_CHECKER)
    found = [(_path(error.absolute_path), _message(error))
             for error in _precise(checker.iter_errors(data))]
    if not found:
        found = sorted(_reference_problems(data, dialect))
    return tuple(found)


def compile_schema(schema: SchemaDef) -> Validator:
    """A validator of the schema's data (checked by schema_problems first): its dialect, and
    a registry of the schema alone, so that no reference reaches the network."""
    data = schema.data or {}
    dialect, _ = _dialect(data)
    assert dialect is not None, "a schema is checked before it is compiled"
    return dialect(data, registry=_registry(data, dialect)[0])


def _registry(data: dict[str, Any], dialect: type[Validator]
              ) -> tuple[Registry[Any], Specification[Any]]:
    specification = specification_with(
        str(dialect.META_SCHEMA.get("$id") or dialect.META_SCHEMA["id"]))
    resource = specification.create_resource(data)
    registry: Registry[Any] = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
    return registry.with_resource(resource.id() or "", resource).crawl(), specification


def _reference_problems(data: dict[str, Any], dialect: type[Validator]
                        ) -> Iterator[tuple[str, str]]:
    """Each `$ref` (and `$dynamicRef`) that does not resolve inside the schema itself."""
    registry, specification = _registry(data, dialect)
    root = specification.create_resource(data)
    stack: list[tuple[Any, str, Any]] = [(data, "", registry.resolver(root.id() or ""))]
    while stack:
        node, path, resolver = stack.pop()
        if isinstance(node, list):
            stack.extend((item, f"{path}[{i}]", resolver) for i, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        if node is not data:
            resolver = resolver.in_subresource(specification.create_resource(node))
        for keyword in _REFS:
            ref = node.get(keyword)
            if isinstance(ref, str):
                message = _unresolved(resolver, ref)
                if message is not None:
                    yield (f"{path}.{keyword}", message)
        stack.extend((value, f"{path}.{key}", resolver) for key, value in node.items()
                     if key not in _LITERALS)


def _unresolved(resolver: Any, ref: str) -> str | None:
    try:
        resolver.lookup(ref)
    except PointerToNowhere as exc:
        return f"'{ref}' points to nothing in this schema ({exc.ref!r} does not exist)"
    except Unresolvable:
        return (f"'{ref}' is not inside this schema: only local references (such as "
                "'#/$defs/name', or an $id given within the schema) are honoured, as Baton "
                "fetches no schema")
    return None


def violations(validator: Validator, value: Any, where: str) -> list[str]:
    """`<where>.<path>: <message>` for each place `value` breaks the schema (at most
    _MOST_ERRORS, the last saying how many more); [] when it conforms."""
    errors = sorted(_precise(validator.iter_errors(value)),
                    key=lambda error: _path(error.absolute_path))
    found = [f"{where}{_path(error.absolute_path)}: {_message(error)}"
             for error in errors[:_MOST_ERRORS]]
    if len(errors) > _MOST_ERRORS:
        found.append(f"and {len(errors) - _MOST_ERRORS} more")
    return found


def _precise(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    """Each error, or for one that failed every branch of an anyOf/oneOf, the branch error
    most likely meant (jsonschema's best_match)."""
    for error in errors:
        meant = best_match(error.context) if error.context else None
        yield meant if meant is not None else error


def _path(parts: Iterable[Any]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def _message(error: ValidationError) -> str:
    message = error.message
    return message if len(message) <= _MOST_CHARS else message[:_MOST_CHARS - 3] + "..."


def _kind(value: Any) -> str:
    name = {dict: "object", list: "array", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"
