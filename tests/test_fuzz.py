"""Hostile definitions and inputs, generated and run on a real prefork worker.

Every case is a workflow built from Baton's operators with odd scripts, jq programs,
JSONPath and expressions, and an input that may be deep, huge, unicode or not JSON at all.
The only outcomes allowed: submit refuses it (DefinitionError, InvalidInput) or the run
ends (COMPLETED, FAILED, TERMINATED) within a deadline, a failure with its reason
recorded; the worker never dies and never hangs. BATON_FUZZ_CASES sets the number of
cases (default 2,000; each example submits a batch of ten).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app import RunStatus, submit_workflow
from app.celery_app import all_queues
from app.errors import DefinitionError, WaitTimeout
from app.loader import ensure_loaded
from app.payloads import InvalidPayload
from app.runtime.runs import InvalidInput
from tests.support import CeleryWorker, RedisServer, scaled, slowness

CASES = int(os.environ.get("BATON_FUZZ_CASES", "2000"))
BATCH = 10
# the worker's limits, low so that hostile cases end quickly
SCRIPT_SECONDS = 0.25
LOOP_CAP = 20
FORK_CAP = 16
REFUSED = (DefinitionError, InvalidInput, InvalidPayload)
SECRET = "fuzz-secret-in-the-workers-environment"
pytestmark = pytest.mark.timeout(max(300, CASES * 0.3))

SCRIPTS = [
    "$.a", "1 + 1", "$.a ? 'x' : 'y'", "JSON.stringify($)", "[1, 2, 3].map(x => x * 2)",
    "(function () { return {nested: {deep: [1, 2]}}; })()", "undefined", "null", "NaN",
    "while (true) {}", "({toJSON() { while (true) {} }})", "var o = {}; o.o = o; o",
    "({get x() { while (true) {} }})", "'x'.repeat(1 << 28)", "throw new Error('boom')",
    "function f() { return f(); } f()", "syntax error here (", "10n", "$.a.b.c.d",
    "new Array(1e7).fill(1)", "Symbol('s')", "(function* () {})()", "[][0]",
    "let s = ''; for (let i = 0; i < 1e5; i++) s += 'ab'; s.length",
]
JQ_PROGRAMS = [
    ".", ".a", "[.[] | tostring]", "$ENV", "env", "input_filename", "$__loc__",
    "last(range(1e12))", "[range(1e9)]", "import \"x\" as $x; .", "include \"x\"; .",
    "def f: f; f", "error(\"boom\")", "halt_error", "debug", "stderr", "input", "[inputs]",
    ".a | test(\"(a+)+b\")", "{a: 1} | .a += 1", "[limit(5; repeat(1))]", "@base64d",
    "..", "getpath([\"a\", \"b\"])", "tojson | fromjson", "not valid jq ((",
]
PATHS = [
    "${workflow.input.a}", "${workflow.input}", "${workflow.input.items[0]}",
    "${workflow.input.items[*].n}", "${workflow.input..n}",
    "${workflow.input.items[?(@.n =~ /(a+)+b/)]}", "${workflow.input.${workflow.input.q}}",
    "${workflow.input.a.b.c.d.e}", "${workflow.variables}", "${workflow.input['a']}",
    "${workflow.input.items[-1:]}", "${workflow.input.items[?(@.n > 3)]}",
    "${workflow.input.items[?(match(@.n, '(a|aa)*b'))]}", "${workflow.input.a}${workflow.input.a}",
    "$${workflow.input.a}", "${workflow.workflowId}", "plain text",
    "${workflow.input.\u202e}", "${workflow.input.${workflow.input.${workflow.input.q}}}",
]
# refused at validation: one in ten paths, so most definitions get to run
PATHS += ["${", "${${${${${${${${${${workflow.input.a}}}}}}}}}}"] * (len(PATHS) // 20)


@dataclass(frozen=True)
class Big:
    """A large value, drawn as its recipe and made only when the case is submitted
    (values that Hypothesis builds itself stay in the process's memory long after)."""

    kind: str
    size: int

    def make(self) -> Any:
        if self.kind == "text":
            return "x" * self.size
        value: Any = 1
        for level in range(self.size):
            value = [value] if level % 2 else {"d": value}
        return value


def made(value: Any) -> Any:
    """A drawn input with its large values made."""
    if isinstance(value, Big):
        return value.make()
    if isinstance(value, dict):
        return {key: made(item) for key, item in value.items()}
    if isinstance(value, list):
        return [made(item) for item in value]
    return value


def hostile_text() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(["a" * 40, "a" * 40 + "!", "\x00", "\ud7ff\U0010ffff", "${", "}"]),
        st.integers(1, 200_000).map(lambda n: Big("text", n)),
    )


json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), hostile_text(),
)
json_data = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=30,
)
inputs = st.fixed_dictionaries(
    {"a": json_data,
     "items": st.lists(st.fixed_dictionaries({"n": st.one_of(hostile_text(), json_data)}),
                       max_size=4),
     "q": st.sampled_from(["a", "items[?(@.n =~ /(a+)+b/)]", "items[*]", "..n", "a.b",
                           "items[0].n", "${workflow.input.a}", ""]),
     "dynamic": st.lists(st.fixed_dictionaries({"i": st.integers(0, 9)}), max_size=24)},
    optional={
        "deep": st.one_of(*[st.integers(1, 126)] * 3, st.just(12_000)).map(
            lambda n: Big("deep", n)),
        # not JSON: refused at submit, one time in four
        "odd": st.one_of(*[json_data] * 3,
                         st.sampled_from([math.nan, math.inf, {1, 2}, b"bytes", object()])),
        "huge": st.integers(1, 6).map(lambda mib: Big("text", mib * 1024 * 1024)),
    },
)


class Refs:
    """Unique step refs within one definition."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"


@st.composite
def steps(draw: Any, refs: Refs, depth: int = 0) -> list[dict[str, Any]]:
    kinds = ["echo", "inline", "jq", "set", "terminate"]
    if depth < 2:
        kinds += ["switch", "loop", "fork", "dynamic"]
    kind = draw(st.sampled_from(kinds))
    ref = refs(kind)
    path = st.sampled_from(PATHS)
    if kind == "echo":
        return [{"name": "echo", "taskReferenceName": ref, "inputParameters": draw(
            st.dictionaries(st.sampled_from(["x", "y", "z"]), st.one_of(path, json_data),
                            max_size=3))}]
    if kind == "inline":
        return [{"name": "inline", "taskReferenceName": ref, "type": "INLINE",
                 "inputParameters": {"evaluatorType": "javascript",
                                     "expression": draw(st.sampled_from(SCRIPTS)),
                                     "a": draw(path)}}]
    if kind == "jq":
        return [{"name": "jq", "taskReferenceName": ref, "type": "JSON_JQ_TRANSFORM",
                 "inputParameters": {"queryExpression": draw(st.sampled_from(JQ_PROGRAMS)),
                                     "a": draw(path)}}]
    if kind == "set":
        return [{"name": "set", "taskReferenceName": ref, "type": "SET_VARIABLE",
                 "inputParameters": {"v": draw(st.one_of(path, json_data))}}]
    if kind == "terminate":
        return [{"name": "end", "taskReferenceName": ref, "type": "TERMINATE",
                 "inputParameters": {"terminationStatus": draw(st.sampled_from(
                     ["COMPLETED", "FAILED", "BOGUS"])), "terminationReason": "fuzz"}}]
    body = st.lists(steps(refs, depth + 1), min_size=1, max_size=2).map(
        lambda lists: [task for tasks in lists for task in tasks])
    if kind == "switch":
        return [{"name": "switch", "taskReferenceName": ref, "type": "SWITCH",
                 "evaluatorType": "javascript", "expression": draw(st.sampled_from(SCRIPTS)),
                 "inputParameters": {"a": draw(path)},
                 "decisionCases": {"x": draw(body), "1": draw(body)},
                 "defaultCase": draw(body)}]
    if kind == "loop":
        condition = draw(st.sampled_from(
            [f"$.{ref}.iteration < 3", "true", "false", "while (true) {}", "$.nope.x", "(("]))
        return [{"name": "loop", "taskReferenceName": ref, "type": "DO_WHILE",
                 "loopCondition": condition, "inputParameters": {"a": draw(path)},
                 "loopOver": draw(body)}]
    if kind == "fork":
        branches = [draw(body), draw(body)]
        return [{"name": "fork", "taskReferenceName": ref, "type": "FORK_JOIN",
                 "forkTasks": branches},
                {"name": "join", "taskReferenceName": refs("join"), "type": "JOIN",
                 "joinOn": [branch[-1]["taskReferenceName"] for branch in branches]}]
    return [{"name": "dynamic", "taskReferenceName": ref, "type": "FORK_JOIN_DYNAMIC",
             "inputParameters": {"forkTaskName": "echo",
                                 "forkTaskInputs": draw(st.sampled_from(
                                     ["${workflow.input.dynamic}", "${workflow.input.a}"]))}},
            {"name": "join", "taskReferenceName": refs("join"), "type": "JOIN"}]


@st.composite
def cases(draw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    refs = Refs()
    tasks = [task for part in draw(st.lists(steps(refs), min_size=1, max_size=4))
             for task in part]
    definition = {"name": "fuzz", "version": 1, "schemaVersion": 2, "tasks": tasks,
                  "outputParameters": {"out": draw(st.sampled_from(PATHS))}}
    return definition, draw(inputs)


@pytest.fixture(scope="module")
def fuzz_worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[CeleryWorker]:
    """A prefork worker on every queue, with limits low enough to end hostile cases fast."""
    ensure_loaded()  # every transformation's queue is known
    worker = CeleryWorker(
        tmp_path_factory.mktemp("fuzz") / "worker.log", all_queues(), concurrency=2,
        prefix="fuzz", env={"BATON_SCRIPT_TIME_LIMIT": str(SCRIPT_SECONDS),
                            "BATON_MAX_LOOP_ITERATIONS": str(LOOP_CAP),
                            "BATON_MAX_FORK_WIDTH": str(FORK_CAP),
                            "BATON_CONTROL_TIME_LIMIT": "20", "FUZZ_SECRET": SECRET})
    yield worker.ready()
    worker.stop()


# the longest a case may take on the idle machine: a few script limits per step, loops
# and forks included, plus the queueing behind the rest of its batch
CASE_SECONDS = 20.0


def test_hostile_cases_are_refused_or_end_with_a_reason(fuzz_worker: CeleryWorker,
                                                        redis_server: RedisServer) -> None:
    outcomes: dict[str, int] = {}
    started = time.monotonic()

    # no shrinking: a hostile case takes seconds, and the failure names its definition
    @settings(max_examples=max(1, CASES // BATCH), deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(st.lists(cases(), min_size=BATCH, max_size=BATCH))
    def check(batch: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        runs = []
        for definition, given_input in batch:
            try:
                runs.append((submit_workflow(made(definition), made(given_input)), definition))
            except REFUSED as exc:
                assert str(exc) and "Traceback" not in str(exc)
                kind = type(exc).__name__
                outcomes[kind] = outcomes.get(kind, 0) + 1
        for run, definition in runs:
            try:
                status = run.wait(timeout=scaled(CASE_SECONDS))
            except WaitTimeout:
                raise AssertionError(f"run {run.id} did not end: {definition}") from None
            assert status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TERMINATED), (
                run.id, status)
            record = run.record()
            if status is not RunStatus.COMPLETED:
                assert record.get("reasonForIncompletion"), (run.id, status, record)
            seen = json.dumps([record, [step.output for step in run.steps.values()],
                               [step.error for step in run.steps.values()]], default=str)
            assert SECRET not in seen, f"run {run.id} shows the worker's environment"
            outcomes[status.value] = outcomes.get(status.value, 0) + 1
        assert fuzz_worker.alive, "the worker died"

    check()
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {sum(outcomes.values())} cases in {elapsed:.0f}s "
          f"(x{slowness():.2f} load): {outcomes}")
    assert SECRET not in fuzz_worker.log.read_text(errors="replace")
    assert sum(outcomes.values()) >= CASES
