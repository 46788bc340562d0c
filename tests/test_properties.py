"""Malformed definitions and inputs, generated: a precise DefinitionError, never a crash.

Pure: validation and planning need neither Redis nor a worker, and nothing generated here
is submitted, so nothing can be half-written.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.compiler.plan import build_plan
from app.dsl.load import load_definition
from app.errors import DefinitionError
from app.registry import describe

TYPES = ["SIMPLE", "FORK_JOIN", "JOIN", "SWITCH", "DO_WHILE", "NOOP", "TERMINATE", "WAIT",
         "FORK_JOIN_DYNAMIC", "SUB_WORKFLOW", "INLINE", "BOGUS", "", None, 5]
TRANSFORMATIONS = {"echo": describe(lambda **values: values, "echo", "echo")}

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20,
)
expressions = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["${", "${}", "${a.b", "$${x}", "${workflow.input.x}", "${t0.output}",
                     "${t9.output.y}", "${${workflow.input.k}}", "${t0.output[?(}",
                     "${t0.output..status}", "x${t1.output}y", "\u202e${workflow}\x00"]),
)


@st.composite
def tasks(draw: Any, depth: int = 0) -> dict[str, Any]:
    task: dict[str, Any] = {
        "name": draw(st.one_of(st.sampled_from(["echo", "nope"]), json_scalars)),
        "taskReferenceName": draw(st.one_of(st.sampled_from([f"t{i}" for i in range(4)]),
                                            json_scalars)),
        "type": draw(st.sampled_from(TYPES)),
    }
    if draw(st.booleans()):
        task["inputParameters"] = draw(st.one_of(
            st.dictionaries(st.text(max_size=8), st.one_of(expressions, json_values),
                            max_size=4),
            json_values))
    if depth < 3 and draw(st.booleans()):
        task["forkTasks"] = draw(st.lists(st.lists(tasks(depth + 1), max_size=3), max_size=3))
    if depth < 3 and draw(st.booleans()):
        task["loopOver"] = draw(st.lists(tasks(depth + 1), max_size=3))
    if draw(st.booleans()):
        task["joinOn"] = draw(st.one_of(st.lists(st.text(max_size=4), max_size=3),
                                        json_scalars))
    if draw(st.booleans()):
        task[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    return task


definitions = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=20), json_scalars),
     "tasks": st.one_of(st.lists(tasks(), max_size=5), json_values)},
    optional={"version": json_scalars, "schemaVersion": st.sampled_from([2, 1, "2", None]),
              "outputParameters": st.one_of(
                  st.dictionaries(st.text(max_size=8), expressions, max_size=3), json_values),
              "inputParameters": json_values, "description": st.text(max_size=5000)},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definitions)
def test_any_definition_is_planned_or_refused_with_located_problems(data: Any) -> None:
    try:
        build_plan(load_definition(data), TRANSFORMATIONS)
    except DefinitionError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.message and "\n" not in problem.message
            assert str(problem) == (f"{problem.path}: {problem.message}" if problem.path
                                    else problem.message)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=100).map(
    lambda b: b.decode("utf-8", "replace"))))
def test_any_text_is_read_or_refused_with_a_definition_error(text: str) -> None:
    try:
        load_definition(text if text.lstrip().startswith(("{", "[")) else "{" + text)
    except DefinitionError as exc:
        assert exc.problems


def test_deep_nesting_and_huge_strings_are_refused_or_planned_without_a_crash() -> None:
    nested: dict[str, Any] = {"name": "echo", "taskReferenceName": "deep", "type": "SIMPLE"}
    for level in range(60):
        nested = {"name": "loop", "taskReferenceName": f"l{level}", "type": "DO_WHILE",
                  "loopCondition": "false", "loopOver": [nested]}
    huge = {"name": "w", "version": 1, "schemaVersion": 2, "tasks": [nested],
            "description": "x" * 2_000_000}
    try:
        build_plan(load_definition(json.loads(json.dumps(huge))), TRANSFORMATIONS)
    except DefinitionError as exc:
        assert "a DO_WHILE inside a DO_WHILE is not supported yet" in str(exc)
