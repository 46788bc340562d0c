"""Conductor's `${...}` expressions: parsing, typed and stringified results, JSONPath, errors.

Pure tests: a parameter value is parsed once and resolved against a scope (root -> document),
the way a step resolves its input at start. No Redis, no Celery.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from app.config import get_settings
from app.dsl.expressions import (
    TASK_ID_ROOT,
    ParseFailure,
    parse_parameter,
)
from tests.support import scaled

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


# --- regular expressions run on RE2 ----------------------------------------------------------

CATASTROPHIC = "a" * 40  # `(a+)+b` against it takes a backtracking engine ~2**40 steps


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "extra"),
    [
        ("${workflow.input.items[?(@.n =~ /(a+)+b/)]}", {}),
        ("${workflow.input.${workflow.input.q}}", {"q": "items[?(@.n =~ /(a+)+b/)]"}),
        ("${workflow.input.items[?match(@.n, '(a+)+b')]}", {}),
        ("${workflow.input.items[?search(@.n, '^(a+)+b')]}", {}),
        ("${workflow.input.items[?match(@.n, @.p)]}", {}),
    ],
)
def test_catastrophic_regex_completes_in_milliseconds(text: str, extra: dict[str, Any]) -> None:
    # Given a pattern that backtracks exponentially on a run of `a`s (written in the path,
    # built at run time, or taken from the data), When the expression resolves,
    # Then RE2 answers in linear time.
    items = [{"n": CATASTROPHIC, "p": "(a+)+b"}, {"n": "aab", "p": "(a+)+b"}]
    scope = {"workflow": {"input": {"items": items, **extra}}}
    parameter = parse_parameter(text)

    start = time.perf_counter()
    result = parameter.resolve(scope)
    elapsed = time.perf_counter() - start

    assert result == [items[1]]
    assert elapsed < scaled(0.05)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${workflow.input.files[?(@.kind =~ /VID.*/i)].id}", [1, 3]),
        ("${workflow.input.files[?(@.kind =~ /vid/)].id}", []),  # =~ matches the whole string
        ("${workflow.input.files[?match(@.kind, 'a.*o')].id}", [2]),
        ("${workflow.input.files[?search(@.kind, 'de')].id}", [1, 3]),
    ],
)
def test_regex_filters_keep_their_meaning(text: str, expected: list[Any]) -> None:
    assert resolve(text) == expected


def test_patterns_with_braces_come_from_the_data() -> None:
    # `}` ends an expression, so a pattern with a repetition count is written in the data;
    # one within the size limit runs, a larger one makes the path name nothing.
    files = SCOPE["workflow"]["input"]["files"]
    scope = {"workflow": {"input": {"files": files, "small": "\\w{1,64}",
                                    "large": "a[ab]{400}b[ab]{400}z"}}}

    assert resolve("${workflow.input.files[?match(@.kind, $.input.small)].id}", scope) == [1, 2, 3]
    assert resolve("${workflow.input.files[?match(@.kind, $.input.large)].id}", scope) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${t.output[?(@.n =~ /(a)\\1/)]}", r"/(a)\1/ cannot be used: invalid escape sequence"),
        ("${t.output[?(@.n =~ /a(?=b)/)]}", "/a(?=b)/ cannot be used: invalid perl operator"),
        ("${t.output[?match(@.n, '(a)\\\\1')]}", r"/(a)\1/ cannot be used"),
    ],
)
def test_pattern_re2_cannot_run_fails_at_parse_time(text: str, message: str) -> None:
    # Given a pattern written in the path that RE2 does not support (backreference,
    # look-ahead), Then the expression is refused when the definition is validated.
    failure = parse_error({"p": text})

    assert failure.location == ".p"
    assert str(failure).startswith("malformed path 't.output[?")
    assert message in str(failure)
    assert "no backreferences or look-around" in str(failure)


def test_pattern_from_the_data_re2_cannot_run_yields_none() -> None:
    # A pattern that comes with the data is compiled at run time; one RE2 cannot run makes
    # the path name nothing, as a malformed path built at run time does.
    scope = {"workflow": {"input": {"items": [{"n": "aa", "p": "(a)\\1"}]}}}

    assert resolve("${workflow.input.items[?match(@.n, @.p)]}", scope) is None
    assert resolve("${workflow.input.${workflow.input.q}}",
                   {"workflow": {"input": {"q": "items[?(@.n =~ /(a)\\1/)]", "items": []}}}
                   ) is None


# --- bounded nesting: hostile strings fail fast, never with RecursionError --------------------


def test_expressions_nest_up_to_the_limit() -> None:
    depth = get_settings().max_expression_depth
    text = "${workflow.input." * (depth - 1) + "${workflow.input.field}" + "}" * (depth - 1)
    scope = {"workflow": {"input": {"field": "field"}}}

    assert resolve(text, scope) == "field"


@pytest.mark.parametrize(
    "text",
    [
        "${" * 10_000 + "workflow.input.x" + "}" * 10_000,  # deeply nested
        "${" * 200_000,  # deeply nested and unterminated
        "x ${workflow.input." * 9 + "a" + "}" * 9,  # one over the limit
    ],
)
def test_expressions_nested_too_deeply_are_refused(text: str) -> None:
    depth = get_settings().max_expression_depth

    failure = parse_error({"a": [text]})

    assert failure.location == ".a[0]"
    assert str(failure).startswith(f"expressions nested more than {depth} deep in '${{")
    assert len(str(failure)) < 200  # the message quotes an excerpt, not the whole text


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("workflow.input" + "[" * 10_000 + "0" + "]" * 10_000, "characters long, over the limit"),
        ("workflow" + ".a" * 50_000, "characters long, over the limit of 4096"),
        ("workflow.input[?" + "(" * 500 + "@.a" + ")" * 500 + "]",
         "brackets and parentheses nested more than 16 deep"),
        ("workflow.input" + "[?@" * 20 + ".a]" * 20,
         "brackets and parentheses nested more than 16 deep"),
        ("workflow.input[?" + "!" * 500 + "@.a]", "more than 64 operators in one path"),
        ("workflow.input[?" + "&&".join(["@.a"] * 500) + "]", "more than 64 operators"),
        ("workflow.input[?@.a in " + "[" * 500 + "1" + "]" * 500 + "]",
         "brackets and parentheses nested more than 16 deep"),
        # each descent nested under another multiplies the work by the data's depth
        ("workflow.input..[?@..[?@..[?@..[?@..x]]]]", "more than 1 recursive descent ('..')"),
        ("workflow.input..a..b", "more than 1 recursive descent ('..')"),
        # a large pattern can make RE2 fall back to time proportional to text x pattern
        ("workflow.input[?@.n =~ /" + "[ab]" * 600 + "/]",
         "is too large: 604 instructions, over the limit of 512"),
    ],
)
def test_hostile_paths_are_refused_by_their_limit(path: str, message: str) -> None:
    # Given a path built to make a recursive parser recurse, or a very long one,
    # When it is parsed statically, Then it fails with the limit it is over.
    start = time.perf_counter()
    failure = parse_error("${" + path + "}")

    assert message in str(failure)
    assert len(str(failure)) < 300
    assert time.perf_counter() - start < scaled(0.5)


def test_hostile_path_built_at_run_time_names_nothing() -> None:
    # The same paths built from data at run time resolve to null, deep in a worker's stack.
    scope = {"workflow": {"input": {
        "q": "[?" + "(" * 500 + "@.a" + ")" * 500 + "]", "r": "[?" + "!" * 900 + "@.a]",
    }}}

    def deep(levels: int) -> Any:
        return resolve("${workflow.input${workflow.input.q}}|${workflow.input${workflow.input.r}}",
                       scope) if levels == 0 else deep(levels - 1)

    assert deep(sys.getrecursionlimit() - 200) == "null|null"


def test_largest_path_within_the_limits_evaluates_deep_in_the_stack() -> None:
    # Nesting and operators at their limits parse and evaluate without meeting Python's
    # recursion limit even when the caller's stack is already deep.
    inner = "&&".join(["!@.a"] * 31)
    text = "${workflow.input[?" + "(" * 15 + inner + ")" * 15 + "]}"

    scope = {"workflow": {"input": [{"a": 1}, {"b": 2}]}}

    def deep(levels: int) -> Any:
        return parse_parameter(text).resolve(scope) if levels == 0 else deep(levels - 1)

    assert deep(sys.getrecursionlimit() - 300) == [{"b": 2}]


def test_parameter_value_nested_too_deeply_is_refused() -> None:
    limit = get_settings().max_json_depth
    value: Any = "${workflow.input.x}"
    for _ in range(10_000):
        value = {"k": [value]}

    failure = parse_error(value)

    assert str(failure) == f"nested more than {limit} deep"
    assert failure.location.startswith(".k[0].k[0]")
