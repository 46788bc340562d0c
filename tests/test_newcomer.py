"""What a newcomer meets following README as written: its shell lines, the seed workflow
with a missing input, a run that fails or waits on a queue nobody serves, and the errors
of `baton` itself."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from app import RunStatus, get_run, submit_workflow
from app.cli import main
from app.errors import DefinitionError, Problem
from app.queue_variants import queue_lists
from app.runtime.state import get_store
from app.store.metric_fields import METRICS_PREFIX
from tests.support import CeleryWorker, RedisServer, scaled, wait_for

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SEED = str(ROOT / "workflows" / "encode_and_deploy.json")
BATON = str(Path(sys.executable).parent / "baton")
MISSING = Problem("input.fileLocation", "declared in the workflow's inputParameters but not given")


def shell_lines(text: str) -> list[str]:
    """The commands of README's bash blocks, comments and blank lines left out."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def expanded_in_own_assignment(line: str) -> list[str]:
    """Variables a command assigns in front of itself and also expands in its arguments:
    the shell expands them before the assignment applies, so they come out empty."""
    words = shlex.split(line, comments=True, posix=True)
    assigned = []
    for word in words:
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=.*", word)
        if not match:
            break
        assigned.append(match.group(1))
    rest = line.split(maxsplit=len(assigned))[-1] if assigned else ""
    return [name for name in assigned if re.search(rf"\$\{{?{name}\b", rest)]


def test_the_check_finds_a_variable_expanded_in_its_own_command() -> None:
    assert expanded_in_own_assignment("A=1 cmd --a=$A") == ["A"]
    assert expanded_in_own_assignment("A=1 B=2 cmd ${B}") == ["B"]
    assert expanded_in_own_assignment("A=1 cmd --port=5555") == []
    assert expanded_in_own_assignment("cmd $A") == []


def test_no_readme_shell_line_expands_a_variable_it_assigns_itself() -> None:
    lines = shell_lines(README)
    assert any("celery -A app flower" in line for line in lines)
    assert [line for line in lines if expanded_in_own_assignment(line)] == []


def test_readmes_flower_line_gives_flower_the_password(tmp_path: Path) -> None:
    # a stand-in `celery` that shows what Flower would be given: its arguments and the
    # variable it reads itself
    stand_in = tmp_path / "celery"
    stand_in.write_text('#!/bin/sh\necho "env=$FLOWER_BASIC_AUTH"\n'
                        'for arg in "$@"; do echo "arg=$arg"; done\n')
    stand_in.chmod(0o755)
    line = next(line for line in shell_lines(README) if "celery -A app flower" in line)

    shown = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30,
                           env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout.splitlines()

    given = [arg.split("=", 2)[-1] for arg in shown if arg.startswith("arg=--basic-auth")]
    env = shown[0].removeprefix("env=")
    # Flower's own option wins over its variable: whichever it reads must hold the password
    assert (given or [env]) == ["admin:secret"], shown


def test_readme_says_what_the_cli_does_without_redis_url() -> None:
    row = next(line for line in README.splitlines() if line.startswith("| `REDIS_URL` |"))
    default = row.split("|")[2].strip()
    assert default == "unset"
    assert "`baton run` starts a private Redis" in row
    assert "baton: REDIS_URL is not set" in row

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "BATON_REDIS_URL")}
    done = subprocess.run([BATON, "status", "some-run"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("baton: REDIS_URL is not set")


def test_readme_says_how_long_the_tests_take() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"about \d+ minutes", quick_start), quick_start


# -- every error of `baton` starts with `baton:` ---------------------------------------------

BAD_INVOCATIONS = [
    ["run"],
    ["run", SEED, "--bogus"],
    ["run", SEED, "--timeout", "soon"],
    ["run", SEED, "--input", "[1]"],
    ["run", SEED, "-i", "novalue"],
    ["run", "nope.json"],
    ["submit", SEED, "--input", "{"],
    ["status"],
    ["status", "no-such-run"],
    ["list", "--limit", "0"],
    ["list", "--status", "DONE"],
    ["graph", "--format", "svg", SEED],
    ["validate"],
    ["validate", "nope.json"],
    ["nosuchcommand"],
    ["worker"],
    ["complete", "no-such-run", "x", "--output", "[]"],
    ["rerun", "no-such-run"],
    ["pause", "no-such-run"],
    ["doctor", "--idle", "-1"],
]


@pytest.mark.parametrize("args", BAD_INVOCATIONS, ids=" ".join)
def test_every_error_line_starts_with_baton(redis_server: RedisServer, args: list[str]) -> None:
    result = CliRunner().invoke(main, args)

    assert result.exit_code in (1, 2), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert lines, args
    assert [line for line in lines if not line.startswith("baton: ")] == []
    assert "Traceback" not in result.stderr


def test_a_bad_definition_is_a_baton_line_per_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "b", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "encod", "taskReferenceName": "e", "type": "SIMPLE", "bogus": 1}]}))

    done = subprocess.run([BATON, "validate", str(bad)], capture_output=True, text=True,
                          timeout=60)

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "baton: tasks[0].bogus: unknown field",
        "baton: tasks[0].name: unknown transformation 'encod' (did you mean 'encode'?)",
    ]


# -- on a worker that consumes only some queues ----------------------------------------------

SERVED = ["baton", "baton.io", "encode", "faulty", "echo"]
"""Every queue the tests use but `deploy`: the seed workflow's second step waits."""


@pytest.fixture(scope="module")
def some_queues(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[CeleryWorker]:
    logs = tmp_path_factory.mktemp("newcomer")
    worker = CeleryWorker(logs / "worker.log", SERVED, concurrency=2,
                          prefix="newcomer").ready()
    yield worker
    worker.stop()
    get_store().client.delete(*queue_lists("deploy"))  # what nobody consumed


def baton_keys() -> set[str]:
    return {str(key) for key in get_store().client.scan_iter("baton:*", count=1000)}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_a_missing_declared_input_is_a_warning_and_strictly_an_error(
    some_queues: CeleryWorker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.client"):
        run = submit_workflow(SEED, {"fileLoc": "s3://in/movie.mov"})
    assert f"workflow encode_and_deploy: {MISSING}" in caplog.messages
    assert MISSING in run.warnings
    run.wait(timeout=scaled(30))

    before = baton_keys()
    with pytest.raises(DefinitionError) as refused:
        submit_workflow(SEED, {"fileLoc": "s3://in/movie.mov"}, strict=True)
    assert refused.value.problems == (MISSING,)
    # nothing written: no run, no definition (the first run's worker may still be writing
    # its last figures, and Celery the failed task's result)
    written = {key for key in baton_keys() - before
               if run.id not in key and not key.startswith(METRICS_PREFIX)}
    assert written == set()

    strict = invoke("submit", SEED, "-i", "fileLoc=s3://in/movie.mov", "--strict")
    assert strict.exit_code == 2
    assert strict.stderr.splitlines() == [f"baton: {MISSING}"]


def test_a_misspelled_input_warns_then_status_shows_the_failed_steps_input_and_error(
    some_queues: CeleryWorker,
) -> None:
    submitted = invoke("submit", SEED, "-i", "fileLoc=s3://in/movie.mov", "--wait")

    assert submitted.exit_code == 1
    first, *rest = submitted.stderr.splitlines()
    run_id = first.split()[1]
    assert rest[0] == f"warning: {MISSING}"
    assert rest[-1] == (f"baton: run {run_id} FAILED at step 'encode': "
                        "InvalidStepInput: fileLocation: required str, got null")
    assert "AttributeError" not in submitted.stderr

    status = invoke("status", run_id)

    assert status.exit_code == 0, status.stderr
    lines = status.stdout.splitlines()
    at = lines.index("step encode failed")
    assert lines[at + 1:at + 3] == [
        '  input  {"fileLocation": null}',
        "  error  InvalidStepInput: fileLocation: required str, got null",
    ]
    assert lines[at + 3] == "  traceback (last lines)"
    assert lines[-1] == ("    app.runtime.step_input.InvalidStepInput: "
                         "fileLocation: required str, got null")


def test_progress_lines_show_each_steps_own_duration(
    some_queues: CeleryWorker, tmp_path: Path
) -> None:
    key = f"durations-{uuid.uuid4()}"
    definition = tmp_path / "two.json"
    definition.write_text(json.dumps({"name": "two", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "nap", "taskReferenceName": "slow",
         "inputParameters": {"key": key, "seconds": 0.5}},
        {"name": "echo", "taskReferenceName": "quick", "inputParameters": {"v": 1}}]}))

    result = invoke("submit", str(definition), "--wait")

    assert result.exit_code == 0, result.stderr
    first, *lines = result.stderr.splitlines()
    shown = {}
    for line in lines:
        took, ref = re.fullmatch(r"\[ *([\d.]+)s\] (\w+) COMPLETED \(\d/2\)", line).groups()
        shown[ref] = float(took)
    steps = get_run(first.split()[1]).steps
    for ref, step in steps.items():
        assert step.started_at is not None and step.ended_at is not None
        recorded = (step.ended_at - step.started_at).total_seconds()
        assert shown[ref] == pytest.approx(recorded, abs=0.0015)
    assert shown["slow"] >= 0.5
    assert shown["quick"] < shown["slow"]


def test_a_step_whose_queue_no_worker_consumes_is_named(some_queues: CeleryWorker) -> None:
    # encode runs; deploy has no worker. The notice comes after 3 quiet seconds
    timeout = 3 + scaled(10)
    result = invoke("submit", SEED, "-i", "fileLocation=s3://in/movie.mov", "--wait",
                    "--timeout", f"{timeout:g}")

    assert result.exit_code == 1
    first, *lines = result.stderr.splitlines()
    run_id = first.split()[1]
    notice = re.compile(r"no worker consumes queue 'deploy' \(step d1, \d+ messages? waiting\); "
                        r"start one: baton worker deploy")
    waiting = [line for line in lines if line.startswith("waiting: ")]
    assert len(waiting) == 1 and notice.fullmatch(waiting[0].removeprefix("waiting: ")), lines
    assert not any("'encode'" in line for line in waiting)
    assert lines[-1] == f"baton: run {run_id} still RUNNING after {timeout:g}s"

    status = invoke("status", run_id)
    assert status.exit_code == 0, status.stderr
    shown = [line for line in status.stdout.splitlines() if line.startswith("waiting ")]
    assert len(shown) == 1 and notice.fullmatch(shown[0].split(None, 1)[1]), status.stdout

    run = get_run(run_id)
    run.cancel("nobody consumes deploy")
    wait_for(lambda: run.status is RunStatus.TERMINATED, what="the run to be cancelled")
