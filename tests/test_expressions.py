"""Conductor's `${...}` expressions: parsing, typed and stringified results, JSONPath, errors.

Pure tests: a parameter value is parsed once and resolved against a scope (root -> document),
the way a step resolves its input at start. No Redis, no Celery.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.dsl.expressions import (
    TASK_ID_ROOT,
    ParseFailure,
    parse_parameter,
)

SCOPE: dict[str, Any] = {
    "workflow": {
        "input": {
            "movie": {"id": 7, "title": "Heat", "tags": ["crime", "drama"]},
            "count": 3,
            "ratio": 0.5,
            "flag": True,
            "nothing": None,
            "name": "heat.mov",
            "field": "count",
            "prefix": "mov",
            "a b": "spaced",
            "files": [
                {"id": 1, "kind": "video", "size": 10},
                {"id": 2, "kind": "audio", "size": 20},
                {"id": 3, "kind": "video", "size": 30},
            ],
        },
        "workflowId": "wf-1",
    },
    "encode": {
        "status": "COMPLETED",
        "output": {"status": "done", "location": "s3://out", "meta": {"status": "inner"}},
    },
    TASK_ID_ROOT: "task-42",
}


def resolve(value: Any, scope: dict[str, Any] = SCOPE) -> Any:
    """Parse a parameter value and resolve it against the scope."""
    return parse_parameter(value).resolve(scope)


def parse_error(value: Any) -> ParseFailure:
    with pytest.raises(ParseFailure) as caught:
        parse_parameter(value)
    return caught.value


# --- a whole-string expression yields the typed value ---------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${workflow.input.movie}", {"id": 7, "title": "Heat", "tags": ["crime", "drama"]}),
        ("${workflow.input.movie.tags}", ["crime", "drama"]),
        ("${workflow.input.count}", 3),
        ("${workflow.input.ratio}", 0.5),
        ("${workflow.input.flag}", True),
        ("${workflow.input.nothing}", None),
        ("${workflow.input.name}", "heat.mov"),
        ("${encode.status}", "COMPLETED"),
        ("${workflow.input.movie.tags[1]}", "drama"),
        ("${workflow.input.files[2].size}", 30),
        ("${ workflow.input.count }", 3),
    ],
)
def test_whole_string_expression_yields_the_typed_value(text: str, expected: Any) -> None:
    # Given a string that is exactly one expression, When it resolves,
    # Then the value keeps its JSON type.
    result = resolve(text)

    assert result == expected
    assert type(result) is type(expected)


def test_typed_values_inside_objects_and_lists() -> None:
    value = {"n": "${workflow.input.count}", "list": ["${workflow.input.flag}", "plain", 5]}

    assert resolve(value) == {"n": 3, "list": [True, "plain", 5]}


# --- an expression embedded in text is stringified -------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file: ${workflow.input.name}", "file: heat.mov"),
        ("n=${workflow.input.count}", "n=3"),
        ("r=${workflow.input.ratio}", "r=0.5"),
        ("flag=${workflow.input.flag}", "flag=true"),
        ("v=${workflow.input.nothing}", "v=null"),
        ("v=${workflow.input.missing}", "v=null"),
        ("tags=${workflow.input.movie.tags}", 'tags=["crime","drama"]'),
        ("m=${workflow.input.movie}", 'm={"id":7,"title":"Heat","tags":["crime","drama"]}'),
        ("${workflow.input.prefix}/${workflow.input.count}", "mov/3"),
        ("${workflow.input.count} ", "3 "),
    ],
)
def test_embedded_expression_is_stringified(text: str, expected: str) -> None:
    # Given text around (or beside) expressions, Then strings go in as they are, other
    # values as compact JSON and null as `null`.
    assert resolve(text) == expected


# --- missing paths yield null ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "${nobody.output.x}",  # root not in scope
        "${workflow.input.absent}",  # missing key
        "${workflow.input.movie.tags[5]}",  # index out of range
        "${workflow.input.count.digits}",  # path through a number
        "${workflow.input.name.length}",  # path through a string
        "${workflow.input.name[0]}",  # index into a string
        "${workflow.input.movie.tags.first}",  # key into a list
        "${workflow.input.nothing.deeper}",  # path through null
    ],
)
def test_missing_path_yields_none(text: str) -> None:
    assert resolve(text) is None


def test_missing_root_in_an_empty_scope() -> None:
    assert resolve("${workflow.input.x}", {}) is None


# --- escapes and nesting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$${x}", "${x}"),
        ("$${workflow.input.count}", "${workflow.input.count}"),
        ("cost: $${price} for ${workflow.input.count}", "cost: ${price} for 3"),
        ("$x and $$", "$x and $$"),
    ],
)
def test_double_dollar_is_a_literal_expression(text: str, expected: str) -> None:
    assert resolve(text) == expected


def test_escaped_expression_names_no_root() -> None:
    parameter = parse_parameter("$${encode.output.x}")

    assert parameter.roots() == set()
    assert list(parameter.expressions()) == []


def test_nested_expression_resolves_inside_out() -> None:
    # Given `field` holds "count", When `${workflow.input.${workflow.input.field}}` resolves,
    # Then the inner expression builds the path `workflow.input.count`.
    assert resolve("${workflow.input.${workflow.input.field}}") == 3


def test_nested_expression_in_text_and_as_root_part() -> None:
    scope = {**SCOPE, "which": {"output": {"ref": "encode", "key": "location"}}}

    assert resolve("at ${encode.output.${which.output.key}}", scope) == "at s3://out"
    assert resolve("${${which.output.ref}.output.location}", scope) == "s3://out"


def test_nested_expression_naming_nothing_yields_none() -> None:
    assert resolve("${workflow.input.${workflow.input.absent}}") is None


# --- JSONPath beyond plain paths -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${encode.output..status}", ["done", "inner"]),
        ("${encode..status}", ["COMPLETED", "done", "inner"]),
        ("${workflow.input.files[?(@.kind == 'video')].id}", [1, 3]),
        ("${workflow.input.files[?(@.id == 2)]}", [{"id": 2, "kind": "audio", "size": 20}]),
        ("${workflow.input.files[?(@.size > 100)]}", []),
        ("${workflow.input.files[*].kind}", ["video", "audio", "video"]),
        ("${workflow.input.movie.tags[*]}", ["crime", "drama"]),
        ("${workflow.input.files[1:].id}", [2, 3]),
    ],
)
def test_non_plain_jsonpath_yields_a_list(text: str, expected: list[Any]) -> None:
    assert resolve(text) == expected


def test_negative_index_picks_from_the_end() -> None:
    assert resolve("${workflow.input.files[-1].id}") == 3


@pytest.mark.parametrize(
    "text",
    ["${workflow.input['a b']}", '${workflow.input["a b"]}', "${workflow['input']['a b']}"],
)
def test_quoted_keys(text: str) -> None:
    assert resolve(text) == "spaced"


def test_task_id_root() -> None:
    assert resolve("${CPEWF_TASK_ID}") == "task-42"
    assert resolve("id-${CPEWF_TASK_ID}") == "id-task-42"
    assert parse_parameter("${CPEWF_TASK_ID}").roots() == {TASK_ID_ROOT}


# --- Parameter: roots and static values ------------------------------------------------------


def test_roots_lists_every_statically_named_root() -> None:
    # Given expressions in keys, lists, text and nesting
    value = {
        "a": "${workflow.input.x}",
        "b": ["${encode.output.location}", "at ${probe.output.at}"],
        "c": {"d": "${store.output.${keys.output.k}}"},
        "e": "${${dyn.output.ref}.output.x}",
    }

    # Then a root hidden behind a nested expression (`${${...}.output}`) is not listed,
    # while the expressions it holds are.
    assert parse_parameter(value).roots() == {"workflow", "encode", "probe", "store", "keys", "dyn"}


def test_root_of_a_nested_expression_ignores_leading_spaces() -> None:
    assert parse_parameter("${ store.output.${keys.output.k}}").roots() == {"store", "keys"}


def test_located_expressions_name_their_place_in_the_value() -> None:
    value = {"a": {"b": [1, "x ${encode.output.location}"]}, "c": "${workflow.input.x}"}

    located = [(where, e.static_root) for where, e in parse_parameter(value).located_expressions()]

    assert located == [(".a.b[1]", "encode"), (".c", "workflow")]


@pytest.mark.parametrize(
    "value",
    [{"a": 1, "b": [True, None, "plain $ text"], "c": {"d": "x}"}}, "text", 5, None, [1, "a"]],
)
def test_value_without_expressions_is_static(value: Any) -> None:
    # Given a value with no `${`, Then the parameter is not dynamic and resolves to itself.
    parameter = parse_parameter(value)

    assert parameter.dynamic is False
    assert parameter.resolve(SCOPE) == value
    assert parameter.roots() == set()


def test_value_with_an_expression_is_dynamic() -> None:
    assert parse_parameter({"a": [1, {"b": "${workflow.input.count}"}]}).dynamic is True


# --- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "location", "message"),
    [
        ("${", "", "unterminated expression '${' (missing '}')"),
        ("x ${workflow.input", "", "unterminated expression '${workflow.input' (missing '}')"),
        ("${a.${b}", "", "unterminated expression '${a.${b}' (missing '}')"),
        ("${}", "", "empty expression '${}'"),
        ("${  }", "", "empty expression '${}'"),
        ({"a": {"b": [0, 1, "${"]}}, ".a.b[2]", "unterminated expression '${' (missing '}')"),
        ({"k": ["ok", {"z": "${}"}]}, ".k[1].z", "empty expression '${}'"),
        (
            {"q": "${t.output[?(}"},
            ".q",
            "malformed path 't.output[?(': unexpected end of expression",
        ),
        (
            ["${t.output.items.length()}"],
            "[0]",
            "malformed path 't.output.items.length()': unexpected token '('",
        ),
        (
            "${.output}",
            "",
            "'.output' does not start with a task reference or 'workflow'",
        ),
    ],
)
def test_malformed_input_fails_at_its_location(value: Any, location: str, message: str) -> None:
    # Given a malformed expression somewhere inside a value, When it is parsed,
    # Then ParseFailure says what is wrong and where inside the value.
    failure = parse_error(value)

    assert failure.location == location
    assert str(failure) == message


def test_nested_path_that_does_not_parse_yields_none_at_run_time() -> None:
    # A path built at run time that is not a valid path names nothing.
    scope = {**SCOPE, "t": {"output": {"bad": "[?("}}}

    assert resolve("${workflow.input${t.output.bad}}", scope) is None
