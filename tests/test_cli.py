"""The `baton` command: in-process with click's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from app.cli import main

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
    assert result.stderr.splitlines() == ["tasks[0].bogus: unknown field"]


def test_validate_names_a_missing_file() -> None:
    result = CliRunner().invoke(main, ["validate", "nope.json"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "nope.json: no such file"


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
