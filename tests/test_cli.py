"""The `baton` command: in-process with click's runner and as a real subprocess."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from app import RunStatus, get_run, submit_workflow
from app.cli import main
from app.cli.runs import follow
from app.cli.workers import worker_command
from app.dsl.load import load_definition
from app.graph import build_graph, to_dot, to_mermaid
from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
SEED = str(ROOT / "workflows" / "encode_and_deploy.json")
BATON = str(Path(sys.executable).parent / "baton")


def test_validate_accepts_a_good_definition() -> None:
    result = CliRunner().invoke(main, ["validate", SEED])
    assert result.exit_code == 0
    assert result.output.strip().endswith("encode_and_deploy.json: ok")


def test_validate_prints_each_problem_as_path_and_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "b", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "encod", "taskReferenceName": "e", "type": "SIMPLE", "bogus": 1}]}))

    result = CliRunner().invoke(main, ["validate", str(bad)])

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "baton: tasks[0].bogus: unknown field",
        "baton: tasks[0].name: unknown transformation 'encod' (did you mean 'encode'?)",
    ]


def test_validate_names_a_missing_file() -> None:
    result = CliRunner().invoke(main, ["validate", "nope.json"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "baton: nope.json: no such file"


def test_run_with_redis_url_set_uses_that_redis_and_its_workers(worker: Any) -> None:
    result = CliRunner().invoke(main, ["run", SEED, "-i", "fileLocation=s3://in/movie.mov"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "cdn_url": "https://cdn.example.com/94614d6d5677/movie.mp4"
    }
    assert "d1 COMPLETED (2/2)" in result.stderr


def test_run_reports_a_failed_run_in_one_line(worker: Any, tmp_path: Path) -> None:
    failing = tmp_path / "failing.json"
    failing.write_text(json.dumps({"name": "f", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "refuse", "taskReferenceName": "r", "inputParameters": {"reason": "nope"}}]}))

    result = CliRunner().invoke(main, ["run", str(failing)])

    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("baton: run ") and last.endswith("FAILED at step 'r': Refused: nope")


def test_run_rejects_bad_input_before_starting_anything() -> None:
    result = CliRunner().invoke(main, ["run", SEED, "--input", "[1]"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "baton: --input: must be a JSON object"
    result = CliRunner().invoke(main, ["run", SEED, "-i", "novalue"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "baton: -i novalue: expected KEY=VALUE"


def test_run_without_redis_url_starts_an_embedded_redis_and_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "BATON_TRANSFORMATIONS")}
    env["BATON_STATE_DIR"] = str(tmp_path / "state")

    done = subprocess.run(
        [BATON, "run", SEED, "-i", "fileLocation=s3://in/movie.mov", "--timeout", "60"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"cdn_url": "https://cdn.example.com/94614d6d5677/movie.mp4"}
    assert "Traceback" not in done.stderr
    assert (tmp_path / "state" / "redis" / "redis.log").exists()


def test_a_transformation_module_that_cannot_be_imported_is_one_clear_line() -> None:
    env = {**os.environ, "BATON_TRANSFORMATIONS": "no_such_module.steps"}
    done = subprocess.run([BATON, "validate", SEED], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "baton: BATON_TRANSFORMATIONS: module 'no_such_module.steps' cannot be imported "
        "(no module named 'no_such_module')"
    )


# -- submit, status, list, graph, schema, worker ----------------------------------------------

MOVIE = ["-i", "fileLocation=s3://in/movie.mov"]
SEED_OUTPUT = {"cdn_url": "https://cdn.example.com/94614d6d5677/movie.mp4"}


def invoke(*args: str, env: Mapping[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def write_definition(tmp_path: Path, name: str, *tasks: dict[str, Any]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "version": 1, "schemaVersion": 2,
                                "tasks": list(tasks)}))
    return str(path)


def step(ref: str, name: str, **inputs: Any) -> dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "inputParameters": inputs}


def ended(run_id: str) -> bool:
    return get_run(run_id).status.terminal


def subprocess_env(**extra: str) -> dict[str, str]:
    """The tests' environment for a `baton` process; the tests' transformations import from ROOT."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def test_submit_prints_the_run_id_and_the_run_goes_on(worker: Any) -> None:
    result = invoke("submit", SEED, *MOVIE)

    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    run_id = result.stdout.strip()
    assert str(uuid.UUID(run_id)) == run_id
    wait_for(lambda: ended(run_id), what="the submitted run to end")
    assert get_run(run_id).result(timeout=1) == SEED_OUTPUT


def test_submit_takes_its_options_from_the_environment(worker: Any) -> None:
    env = {"BATON_JSON": "1", "BATON_INPUT": '{"fileLocation": "s3://in/movie.mov"}',
           "BATON_CORRELATION_ID": "order-env"}

    result = invoke("submit", SEED, env=env)

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == ["id", "status"]
    assert document["status"] in ("RUNNING", "COMPLETED")
    wait_for(lambda: ended(document["id"]), what="the submitted run to end")
    assert get_run(document["id"]).record()["correlationId"] == "order-env"


def test_submit_wait_follows_the_run_and_prints_its_output(worker: Any) -> None:
    result = invoke("submit", SEED, *MOVIE, "--wait", "--correlation-id", "order-7")

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == SEED_OUTPUT
    first, *steps = result.stderr.splitlines()
    run_id = first.split()[1]
    assert first == f"run {run_id} of encode_and_deploy v1"
    assert [line.split("] ", 1)[1] for line in steps] == [
        "encode COMPLETED (1/2)", "d1 COMPLETED (2/2)",
    ]
    assert get_run(run_id).record()["correlationId"] == "order-7"


def test_submit_wait_json_reports_a_failed_run(worker: Any, tmp_path: Path) -> None:
    failing = write_definition(tmp_path, "f", step("r", "refuse", reason="nope"))

    result = invoke("submit", failing, "--wait", "--json")

    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document == {"id": document["id"], "status": "FAILED", "output": None}
    assert result.stderr.splitlines()[-1] == (
        f"baton: run {document['id']} FAILED at step 'r': Refused: nope"
    )


def test_submit_wait_reports_a_retry_and_gives_up_past_the_timeout(
    worker: Any, tmp_path: Path
) -> None:
    # the second attempt waits 3 s: long enough to still be RUNNING at the timeout
    slow = write_definition(tmp_path, "slow", {
        **step("f", "flaky", key=f"slow-{uuid.uuid4()}", failures=1),
        "taskDefinition": {"name": "flaky", "retryDelaySeconds": 3},
    })

    result = invoke("submit", slow, "--wait", "--timeout", "1.5")

    assert result.exit_code == 1
    assert result.stdout == ""
    first, *rest = result.stderr.splitlines()
    run_id = first.split()[1]
    assert [line.split("] ", 1)[-1] for line in rest] == [
        "f attempt 1 failed, retrying (ConnectionError: attempt 1 failed)",
        f"baton: run {run_id} still RUNNING after 1.5s",
    ]


def test_submit_with_a_seen_idempotency_key_gives_the_earlier_run(worker: Any) -> None:
    key = f"order-{uuid.uuid4()}"
    first = invoke("submit", SEED, *MOVIE, "--idempotency-key", key)
    again = invoke("submit", SEED, *MOVIE, "--idempotency-key", key)

    assert first.exit_code == again.exit_code == 0
    assert first.stdout == again.stdout
    wait_for(lambda: ended(first.stdout.strip()), what="the run to end")


def test_submit_needs_a_redis_url() -> None:
    result = invoke("submit", SEED, *MOVIE, env={"REDIS_URL": None, "BATON_REDIS_URL": None})

    assert result.exit_code == 2
    assert result.stderr == (
        "baton: REDIS_URL is not set: `baton submit` needs the Redis its workers use "
        "(set REDIS_URL or pass --redis-url; only `baton run` starts a private one)\n"
    )


def test_submit_reports_bad_files_and_input_in_one_line(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"name": "x",\n "tasks": [}')
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\ntasks: [a\n  b: c")

    cases = {
        str(bad_json): f"baton: {bad_json}: malformed JSON at line 2 column 12: Expecting value\n",
        str(bad_yaml): f"baton: {bad_yaml}: malformed YAML at line 3 column 4: "
                       "expected ',' or ']', but got ':'\n",
        "nope.json": "baton: nope.json: no such file\n",
    }
    for file, message in cases.items():
        result = invoke("submit", file)
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)
    result = invoke("submit", SEED, "--input", "{")
    assert (result.exit_code, result.stderr) == (
        2, "baton: --input: malformed JSON: Expecting property name enclosed in double quotes "
           "at column 2\n",
    )


def test_unreachable_redis_is_one_line() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    for command in (["status", "some-run"], ["list"], ["submit", SEED, *MOVIE]):
        done = subprocess.run([BATON, *command, "--redis-url", dead], env=subprocess_env(),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, command
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1
        assert done.stderr.startswith("baton: cannot reach Redis: "), done.stderr


def test_status_shows_the_run_and_each_step(worker: Any) -> None:
    run = submit_workflow(SEED, input={"fileLocation": "s3://in/movie.mov"},
                          correlation_id="order-9")
    run.wait(timeout=30)

    result = invoke("status", run.id)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        f"run          {run.id}",
        "workflow     encode_and_deploy v1",
        "status       COMPLETED",
        "correlation  order-9",
    ]
    assert lines[4].startswith("started      ") and lines[4].endswith(" UTC")
    assert lines[5].startswith("ended        ") and lines[5].endswith("s)")
    assert lines[6] == ""
    assert lines[7].split() == ["REF", "TYPE", "STATUS", "ATTEMPTS", "WORKER", "DURATION",
                                "ERROR"]
    rows = [line.split() for line in lines[8:]]
    assert [row[:4] for row in rows] == [
        ["encode", "SIMPLE", "COMPLETED", "1"], ["d1", "SIMPLE", "COMPLETED", "1"],
    ]
    assert all(row[5].endswith("s") for row in rows)


def test_status_json_is_a_stable_document(worker: Any, tmp_path: Path) -> None:
    failing = write_definition(tmp_path, "partly", step("ok", "echo", v=1),
                               step("bad", "refuse", reason="disk full"))
    run = submit_workflow(failing, input={"x": 1})
    run.wait(timeout=30)

    result = invoke("status", run.id, "--json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == [
        "id", "name", "version", "status", "correlationId", "createTime", "startTime",
        "endTime", "durationMs", "reason", "failedStep", "input", "output", "warnings",
        "steps", "cached", "waitingOn",
    ]
    assert {k: document[k] for k in ("id", "name", "version", "status", "correlationId",
                                     "reason", "failedStep", "input", "output")} == {
        "id": run.id, "name": "partly", "version": 1, "status": "FAILED",
        "correlationId": None, "reason": "Refused: disk full", "failedStep": "bad",
        "input": {"x": 1}, "output": None,
    }
    assert document["durationMs"] == document["endTime"] - document["startTime"] >= 0
    ok, bad = document["steps"]
    assert list(ok) == [
        "ref", "type", "name", "status", "attempts", "worker", "taskId", "startTime",
        "endTime", "durationMs", "input", "output", "error", "failedAttempts", "cached",
        "waitingOn",
    ]
    assert {k: ok[k] for k in ("ref", "type", "name", "status", "attempts", "input", "output",
                               "error")} == {
        "ref": "ok", "type": "SIMPLE", "name": "echo", "status": "COMPLETED", "attempts": 1,
        "input": {"v": 1}, "output": {"v": 1}, "error": None,
    }
    assert ok["worker"] and ok["taskId"]
    assert (bad["ref"], bad["status"], bad["output"]) == ("bad", "FAILED", None)
    assert (bad["error"]["type"], bad["error"]["message"]) == ("Refused", "disk full")
    assert "Refused: disk full" in bad["error"]["traceback"]


def test_status_of_an_unknown_run_is_one_line(redis_server: Any) -> None:
    result = invoke("status", "nope")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1, "", "baton: no run nope (never submitted, or expired)\n"
    )


def test_list_shows_newest_runs_first_and_filters_them(worker: Any, tmp_path: Path) -> None:
    name = f"listed_{uuid.uuid4().hex[:8]}"
    adding = write_definition(tmp_path, name, step(
        "sum", "add", a="${workflow.input.a}", b="${workflow.input.b}"))
    ids = []
    for b in (1, "not a number", 3):  # the second run fails: 1 + "not a number"
        run = submit_workflow(adding, input={"a": 1, "b": b})
        run.wait(timeout=30)
        ids.append(run.id)

    result = invoke("list", "--name", name, "--json")

    assert result.exit_code == 0, result.stderr
    documents = json.loads(result.stdout)
    assert [(d["id"], d["status"]) for d in documents] == [
        (ids[2], "COMPLETED"), (ids[1], "FAILED"), (ids[0], "COMPLETED"),
    ]
    assert list(documents[1]) == [
        "id", "name", "version", "status", "correlationId", "createTime", "startTime",
        "endTime", "durationMs", "reason", "failedStep",
    ]
    assert (documents[1]["name"], documents[1]["failedStep"]) == (name, "sum")
    limited = invoke("list", "--name", name, "--limit", "2", "--json")
    assert [d["id"] for d in json.loads(limited.stdout)] == [ids[2], ids[1]]

    failed = invoke("list", "--name", name, "--status", "failed")
    header, *rows = failed.stdout.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "STARTED", "DURATION", "CORRELATION"]
    assert [row.split()[:4] for row in rows] == [[ids[1], name, "v1", "FAILED"]]

    none = invoke("list", "--name", name, "--status", "RUNNING", env={"BATON_JSON": None})
    assert (none.exit_code, none.stdout, none.stderr) == (0, "", "no runs match\n")
    assert invoke("list", "--name", name, "--status", "PAUSED", "--json").stdout == "[]\n"


def test_graph_of_a_file_needs_no_redis() -> None:
    result = invoke("graph", SEED, "--format", "dot",
                    env={"REDIS_URL": None, "BATON_REDIS_URL": None})

    assert result.exit_code == 0, result.stderr
    assert result.stdout == to_dot(build_graph(load_definition(SEED)))
    assert invoke("graph", SEED).stdout == to_mermaid(build_graph(load_definition(SEED)))


def test_graph_of_a_run_colours_each_step_by_its_status(worker: Any, tmp_path: Path) -> None:
    failing = write_definition(tmp_path, "two", step("ok", "echo"), step("bad", "refuse"),
                               step("never", "echo"))
    run = submit_workflow(failing)
    run.wait(timeout=30)

    result = invoke("graph", "--run", run.id)  # without FILE: the run's own definition

    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(
        "    class t_ok completed\n"
        "    class t_bad failed\n"
    )
    assert '    t_never["never<br/>echo"]\n' in result.stdout
    dot = invoke("graph", failing, "--run", run.id, "--format", "dot")
    assert '    t_bad [label="bad\\nrefuse", fillcolor="#ffcdd2", color="#c62828"];\n' in dot.stdout

    other = invoke("graph", SEED, "--run", run.id)
    assert (other.exit_code, other.stderr) == (
        2, f"baton: run {run.id} is of workflow 'two', not 'encode_and_deploy' ({SEED})\n"
    )


def test_graph_needs_a_file_or_a_run() -> None:
    result = invoke("graph")
    assert (result.exit_code, result.stderr) == (
        2, "baton: graph: give a definition FILE, a --run RUN_ID, or both\n"
    )


def test_schema_is_the_json_schema_of_definitions() -> None:
    result = invoke("schema")

    assert result.exit_code == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$ref"] == "#/$defs/WorkflowDef"
    task = schema["$defs"]["WorkflowTask"]
    assert {"name", "taskReferenceName", "inputParameters", "forkTasks"} <= set(task["properties"])
    assert task["required"] == ["name", "taskReferenceName"]
    assert {"SIMPLE", "FORK_JOIN", "SWITCH"} <= set(task["properties"]["type"]["enum"])
    assert schema["$defs"]["WorkflowDef"]["additionalProperties"] is False


def test_worker_refuses_unknown_queues_in_one_line() -> None:
    result = invoke("worker", "encode", "encod")
    assert (result.exit_code, result.stderr) == (
        2, "baton: unknown queue 'encod' (did you mean 'encode'?)\n"
    )


def test_worker_command_is_celery_named_after_the_first_queue() -> None:
    assert worker_command(["encode", "deploy"], 3, "INFO", "5001") == [
        sys.executable, "-m", "celery", "-A", "app", "worker", "-Q", "encode,deploy",
        "-n", "encode.5001@%h", "-c", "3", "-l", "INFO",
    ]


def test_worker_replaces_itself_with_celery_named_per_copy(redis_server: Any) -> None:
    # the process itself becomes the celery worker (same pid); that such a command serves
    # its queues is what test_queue_workers shows with the Procfile's commands
    env = subprocess_env(PORT="7123", BATON_CONCURRENCY="1", BATON_LOG_LEVEL="warning")
    process = subprocess.Popen([BATON, "worker", "thumbnail,notify", "notify"], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    try:
        def command() -> list[str] | None:
            argv = cmdline.read_bytes().decode().split("\0")[:-1]
            if process.poll() is not None:
                _, err = process.communicate()
                raise AssertionError(f"`baton worker` exited: {err!r}")
            return argv if "celery" in argv else None

        argv = wait_for(command, timeout=30, what="`baton worker` to exec celery")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the worker and any child it forked
        process.communicate(timeout=30)
    python, *arguments = worker_command(["thumbnail", "notify"], 1, "WARNING", "7123")
    assert argv[1:] == arguments
    assert Path(argv[0]).resolve() == Path(python).resolve()


def test_submit_wait_and_status_json_as_real_processes(worker: Any) -> None:
    submitted = subprocess.run(
        [BATON, "submit", SEED, *MOVIE, "--wait", "--timeout", "60"],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )

    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout) == SEED_OUTPUT
    assert "Traceback" not in submitted.stderr
    run_id = submitted.stderr.splitlines()[0].split()[1]

    status = subprocess.run([BATON, "status", run_id, "--json"], cwd=ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=60)

    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert (document["id"], document["status"], document["output"]) == (
        run_id, "COMPLETED", SEED_OUTPUT
    )
    assert [(s["ref"], s["status"]) for s in document["steps"]] == [
        ("encode", "COMPLETED"), ("d1", "COMPLETED"),
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_following_on_a_terminal_draws_a_progress_bar(
    worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = submit_workflow(SEED, input={"fileLocation": "s3://in/movie.mov"})
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)

    status = follow(run, 2, time.monotonic(), 30)

    assert status is RunStatus.COMPLETED
    screen = terminal.getvalue()
    assert f"run {run.id[:8]}" in screen
    assert "2/2  d1 COMPLETED" in screen


def test_register_then_submit_by_name_and_complete_a_human_step(
    worker: Any, tmp_path: Path
) -> None:
    from app import get_run
    from tests.support import wait_for

    runner = CliRunner()
    definition = {"name": "cli_approval", "version": 3, "schemaVersion": 2, "tasks": [
        {"name": "ask", "taskReferenceName": "ask", "type": "HUMAN"},
        {"name": "echo", "taskReferenceName": "after", "inputParameters": {
            "ok": "${ask.output.ok}"}}]}
    file = tmp_path / "approval.json"
    file.write_text(json.dumps(definition))
    registered = runner.invoke(main, ["register", str(file)])
    assert registered.exit_code == 0, registered.stderr
    assert registered.stdout.strip() == f"{file}: registered cli_approval v3"

    submitted = runner.invoke(main, ["submit", "cli_approval", "--json"])
    assert submitted.exit_code == 0, submitted.stderr
    run = get_run(json.loads(submitted.stdout)["id"])
    wait_for(lambda: "ask" in run.steps and run.steps["ask"].status.value == "IN_PROGRESS"
             and run.steps["ask"].output is not None, timeout=30, what="the HUMAN step")

    done = runner.invoke(main, ["complete", run.id, "ask", "--output", '{"ok": true}'])
    assert done.exit_code == 0, done.stderr
    assert run.result(timeout=30) == {"ok": True}

    again = runner.invoke(main, ["complete", run.id, "ask"])
    assert again.exit_code == 1
    assert again.stderr.strip().endswith("is no longer waiting")


def test_lifecycle_commands_cancel_and_retry_runs(worker: Any) -> None:
    import uuid

    from app import RunStatus, get_run
    from app.runtime.state import get_store

    key = uuid.uuid4().hex
    definition = {"name": "cli_life", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "fails_until_fixed", "taskReferenceName": "b", "inputParameters": {
            "key": key}}]}
    runner = CliRunner()
    submitted = runner.invoke(main, ["submit", json.dumps(definition), "--json"])
    assert submitted.exit_code == 0, submitted.stderr
    run = get_run(json.loads(submitted.stdout)["id"])
    assert run.wait(timeout=30) is RunStatus.FAILED

    refused = runner.invoke(main, ["cancel", run.id])
    assert refused.exit_code == 1
    assert "is not RUNNING or PAUSED" in refused.stderr

    get_store().client.set(f"test:fixed:{key}", "1")
    retried = runner.invoke(main, ["retry", run.id])
    assert retried.exit_code == 0, retried.stderr
    assert retried.stdout.strip() == f"{run.id}: retrying"
    assert run.result(timeout=30) == {"attempt": 2}
