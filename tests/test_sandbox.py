"""The script sandboxes: jq in its evaluator process, JavaScript in QuickJS, and both in runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import RunStatus, submit_workflow
from app.config import get_settings
from app.runtime import jq_sandbox
from app.runtime.javascript import ScriptError, evaluate
from app.runtime.jq_sandbox import JqError
from tests.support import scaled, wait_for

# Set at import, before any worker of the session starts: a worker that leaked its
# environment into a step's output would leak this.
MARKER = "BATON_TEST_SANDBOX_MARKER"
os.environ[MARKER] = "marker-value-7f3a"


def jq(program: str, value: Any = None, **limits: Any) -> list[Any]:
    return jq_sandbox.evaluate(program, {} if value is None else value, **limits)


def wf(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "sandbox", "version": 1, "schemaVersion": 2, "tasks": list(tasks)}


def jq_step(ref: str, query: str, **inputs: Any) -> dict[str, Any]:
    return {"name": "jq", "taskReferenceName": ref, "type": "JSON_JQ_TRANSFORM",
            "inputParameters": {"queryExpression": query, **inputs}}


def idle_evaluator_pids() -> list[int]:
    with jq_sandbox._pool.lock:
        return [evaluator.process.pid for evaluator in jq_sandbox._pool.idle]


def gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for its new parent counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def settings_from_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings read again from the environment the test sets, and again after it."""
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


# -- jq, in its evaluator ----------------------------------------------------------------------


def test_jq_gives_every_result_and_keeps_numbers_and_strings() -> None:
    assert jq(".items[] | .id", {"items": [{"id": 1}, {"id": 2.5}, {"id": "é\u2028"}]}) == [
        1, 2.5, "é\u2028"]
    assert jq("[range(3)] | add, nan") == [3, None]
    assert jq("empty") == []


def test_jq_sees_an_empty_environment_and_no_paths() -> None:
    assert jq("$ENV") == [{}]
    assert jq("env") == [{}]
    found = jq("[$ENV, env, input_filename, $__loc__, get_search_list] | tojson")[0]
    assert MARKER not in found and os.getcwd() not in found and "/" not in found


@pytest.mark.parametrize("program", [
    'import "x" as $s {search: "/"}; .',
    'include "x" {search: "/etc"}; .',
    'module {a: 1}; .',
    '  # a comment\n\timport "a" as $a; .',
    '# a comment continued \\\n. ,\nimport "a" as $a; .',
])
def test_jq_module_directives_are_refused_before_running(program: str) -> None:
    with pytest.raises(JqError, match="is not allowed: jq programs cannot use modules"):
        jq(program)


def test_jq_cannot_read_files_through_modulemeta() -> None:
    with pytest.raises(JqError, match="module not found"):
        jq('"etc/passwd" | modulemeta')


def test_jq_debug_and_stderr_output_does_not_reach_the_protocol() -> None:
    big = "x" * 200_000
    assert jq("[(1 | debug), (2 | stderr), (.big | debug | length), (.big | stderr | length)]",
              {"big": big}) == [[1, 2, 200_000, 200_000]]
    assert jq(".a", {"a": 1}) == [1]


def test_jq_halt_error_fails_and_input_has_nothing_to_read() -> None:
    with pytest.raises(JqError, match="halt_error: stop here"):
        jq('"stop here" | halt_error')
    with pytest.raises(JqError, match='halt_error: {"a":1}'):
        jq("{a: 1} | halt_error(1)")
    assert jq("halt") == []
    with pytest.raises(JqError, match="no further input"):
        jq("input")
    assert jq("[inputs]") == [[]]
    assert jq(".", {"still": "fine"}) == [{"still": "fine"}]


def test_jq_errors_are_jq_errors() -> None:
    with pytest.raises(JqError, match="syntax error"):
        jq(".a[")
    with pytest.raises(JqError, match="^boom$"):
        jq('error("boom")')
    with pytest.raises(JqError, match="nest too deeply"):
        jq("reduce range(20000) as $i (null; [.])")
    with pytest.raises(JqError, match="input is not JSON data"):
        jq(".", {"x": float("nan")})


def test_jq_that_never_ends_is_stopped_and_the_next_evaluation_runs_fresh() -> None:
    assert jq(".", 1) == [1]
    before = set(idle_evaluator_pids())
    started = time.monotonic()
    with pytest.raises(ScriptError, match="^jq ran past its time limit of 0.5s$"):
        jq("last(range(1e12))", time_limit=0.5)
    assert time.monotonic() - started < scaled(3)
    assert all(wait_for(lambda pid=pid: gone(pid), 5, "killed evaluator ends")
               for pid in before - set(idle_evaluator_pids()))
    started = time.monotonic()
    assert jq(".n + 1", {"n": 1}) == [2]
    assert time.monotonic() - started < scaled(3)


def test_jq_that_allocates_without_end_is_stopped() -> None:
    started = time.monotonic()
    with pytest.raises(ScriptError, match="^jq went past its memory limit of 32 MiB$"):
        jq("[range(1e9)]", memory_mib=32, time_limit=10)
    assert time.monotonic() - started < scaled(10)
    assert jq("[limit(3; repeat(1))]", memory_mib=32) == [[1, 1, 1]]


def test_jq_results_over_the_output_limit_fail(settings_from_env: pytest.MonkeyPatch) -> None:
    settings_from_env.setenv("BATON_MAX_OUTPUT_BYTES", "2048")
    with pytest.raises(JqError, match="results are larger than 2048 bytes"):
        jq("[range(1000)]")


def test_jq_is_safe_to_call_from_many_threads() -> None:
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(15):
                assert jq(".n * 1000 + .i", {"n": n, "i": i}) == [n * 1000 + i]
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(scaled(60))
    assert not failures
    assert len(idle_evaluator_pids()) <= jq_sandbox._MAX_IDLE


_PARENT = textwrap.dedent("""
    import sys, threading
    from app.runtime import jq_sandbox
    jq_sandbox.evaluate(".", 1)
    print(jq_sandbox._pool.idle[0].process.pid, flush=True)
    if sys.argv[1] == "busy":
        threading.Thread(target=jq_sandbox.evaluate, args=("last(range(1e12))", 1),
                         kwargs={"time_limit": 1}).start()
        print("busy", flush=True)
    sys.stdin.read()
""")


@pytest.mark.parametrize("state", ["idle", "busy"])
def test_an_evaluator_does_not_outlive_its_parent(state: str) -> None:
    with subprocess.Popen([sys.executable, "-c", _PARENT, state], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            pid = int(parent.stdout.readline())
            if state == "busy":
                assert parent.stdout.readline() == "busy\n"
            assert not gone(pid)
            parent.send_signal(signal.SIGKILL)
            parent.wait()
            # idle: it reads end-of-file at once; busy: its CPU limit (1 + 1 s) ends it
            wait_for(lambda: gone(pid), 10, "the evaluator to end after its parent")
        finally:
            parent.kill()


# -- JavaScript ----------------------------------------------------------------------------


def test_scripts_keep_their_results_semantics() -> None:
    assert evaluate("var x = $.a * 2; x + 1", {"a": 2}) == 5
    assert evaluate("if ($.a) { 'yes' } else { 'no' }", {"a": 1}) == "yes"
    assert evaluate("(function () { return {v: $.a.get(0), n: $.a.size()}; })()",
                    {"a": [7]}) == {"v": 7, "n": 1}
    assert evaluate("undefined", {}) is None
    assert evaluate("(function () {})", {}) is None
    assert evaluate("4.0", {}) == 4 and isinstance(evaluate("4.0", {}), int)
    assert evaluate("JSON.stringify = function () { return 5; }; [1]", {}) == [1]
    assert evaluate("$.__proto__", {"__proto__": {"k": 1}}) == {"k": 1}


@pytest.mark.parametrize("script", [
    "({toJSON() { while (true) {} }})",
    "({get loops() { while (true) {} }})",
    "[{toJSON() { for (;;) {} }}]",
])
def test_converting_a_result_is_under_the_time_limit(script: str) -> None:
    started = time.monotonic()
    with pytest.raises(ScriptError, match="^script ran past its time limit of 0.3s$"):
        evaluate(script, {}, time_limit=0.3)
    assert time.monotonic() - started < scaled(5)


def test_converting_a_result_is_under_the_memory_limit() -> None:
    with pytest.raises(ScriptError, match="past its memory limit of 8 MiB"):
        evaluate("({toJSON() { var a = []; while (true) a.push(new Array(1e5).fill(1)); }})",
                 {}, memory_limit=8 * 1024 * 1024)


@pytest.mark.parametrize(("script", "bindings", "message"), [
    ("var o = {}; o.self = o; o", {}, "script failed: TypeError: circular reference"),
    ("({n: 10n})", {}, "script failed: TypeError: bigint"),
    ("function f() { return f() + 1; } f()", {}, "script failed: InternalError: stack overflow"),
    ("(", {}, "script failed: SyntaxError"),
    ("throw new Error('no')", {}, "script failed: Error: no"),
    ("var a = []; for (var i = 0; i < 5000; i++) a = [a]; a", {},
     "script failed: its result nests too deeply"),
    ("1", {"x": float("nan")}, "the script's input is not JSON: \\$.x: nan"),
    ("1", {"s": {1, 2}}, "the script's input is not JSON: \\$.s: a set"),
])
def test_every_script_failure_is_a_script_error(script: str, bindings: Any, message: str) -> None:
    with pytest.raises(ScriptError, match=f"^where: {message}"):
        evaluate(script, bindings, where="where")


def test_script_limits_come_from_the_settings(settings_from_env: pytest.MonkeyPatch) -> None:
    settings_from_env.setenv("BATON_SCRIPT_TIME_LIMIT", "0.25")
    settings_from_env.setenv("BATON_JS_MEMORY_MIB", "8")
    settings_from_env.setenv("BATON_JQ_MEMORY_MIB", "24")
    with pytest.raises(ScriptError, match="time limit of 0.25s"):
        evaluate("while (true) {}", {})
    with pytest.raises(ScriptError, match="memory limit of 8 MiB"):
        evaluate("var a = []; while (true) a.push(new Array(1e5).fill(1));", {})
    with pytest.raises(ScriptError, match="time limit of 0.25s"):
        jq("last(range(1e12))")
    with pytest.raises(ScriptError, match="memory limit of 24 MiB"):
        jq("[range(1e9)]", time_limit=10)


# -- through a worker ---------------------------------------------------------------------


def test_a_prefork_worker_keeps_its_environment_and_outlives_a_jq_loop(
    redis_server: Any, tmp_path: Path
) -> None:
    # before any test of this module starts the in-process worker: this one takes the steps
    from tests.test_faults import WorkerProcess

    process = WorkerProcess(tmp_path / "worker.log", f"sandbox-{uuid.uuid4().hex[:6]}")
    try:
        process.ready()
        limit = get_settings().script_time_limit
        envs = submit_workflow(wf(jq_step("envs", "[$ENV, env, $ENV.REDIS_URL]")))
        assert envs.wait(timeout=scaled(30)) is RunStatus.COMPLETED
        assert envs.steps["envs"].output["result"] == [{}, {}, None]
        assert process.name in str(envs.steps["envs"].worker)
        spin = submit_workflow(wf(jq_step("spin", "last(range(1e12))")))
        started = time.monotonic()
        assert spin.wait(timeout=scaled(limit + 10)) is RunStatus.FAILED
        assert time.monotonic() - started < scaled(limit + 5)
        after = submit_workflow(wf(jq_step("after", ".v * 2", v=4)))
        assert after.result(timeout=scaled(30)) == {"result": 8, "resultList": [8]}
    finally:
        process.stop(signal.SIGKILL)


def test_a_jq_step_shows_no_environment_of_its_worker(worker: Any) -> None:
    run = submit_workflow(wf(jq_step("envs", "{e: $ENV, f: env}", given="${workflow.input}")),
                          input={"k": 1})
    assert run.wait(timeout=30) is RunStatus.COMPLETED
    output = run.steps["envs"].output
    assert output["result"] == {"e": {}, "f": {}}
    assert MARKER not in json.dumps(output)


def test_steps_whose_scripts_never_end_fail_within_their_limit(worker: Any) -> None:
    limit = get_settings().script_time_limit
    jq_run = submit_workflow(wf(jq_step("spin", "last(range(1e12))")))
    js_run = submit_workflow(wf({"name": "inline", "taskReferenceName": "tojson",
                                 "type": "INLINE", "inputParameters": {
                                     "evaluatorType": "javascript",
                                     "expression": "({toJSON() { while (true) {} }})"}}))
    started = time.monotonic()
    assert jq_run.wait(timeout=scaled(limit + 10)) is RunStatus.FAILED
    assert js_run.wait(timeout=scaled(limit + 10)) is RunStatus.FAILED
    assert time.monotonic() - started < scaled(limit + 5)
    assert jq_run.steps["spin"].error["message"] == (
        f"queryExpression: jq ran past its time limit of {limit:g}s")
    assert js_run.steps["tojson"].error["message"] == (
        f"expression: script ran past its time limit of {limit:g}s")
    after = submit_workflow(wf(jq_step("fine", ".v", v=3)))
    assert after.result(timeout=30) == {"result": 3, "resultList": [3]}


def test_script_failures_name_their_field(worker: Any) -> None:
    loop = {"name": "loop", "taskReferenceName": "lp", "type": "DO_WHILE",
            "loopCondition": "$.lp.nothing.here",
            "loopOver": [{"name": "noop", "taskReferenceName": "tick", "type": "NOOP"}]}
    loop_run = submit_workflow(wf(loop))
    # a literal program is compiled at validation: one given as input is known at run time only
    jq_run = submit_workflow(wf(jq_step("bad", "${workflow.input.q}")),
                             {"q": 'import "x" as $x; .'})
    assert loop_run.wait(timeout=30) is RunStatus.FAILED
    assert jq_run.wait(timeout=30) is RunStatus.FAILED
    assert loop_run.steps["lp"].error["message"].startswith(
        "loopCondition: script failed: TypeError")
    assert jq_run.steps["bad"].error["message"] == (
        "queryExpression: jq: 'import' is not allowed: jq programs cannot use modules here")
