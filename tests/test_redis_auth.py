"""A Redis that asks for a password: the URL's credentials reach broker, backend and store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import RedisServer, redis_binary

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_a_workflow_runs_on_a_redis_with_a_password(tmp_path: Path) -> None:
    binary = redis_binary()
    assert binary is not None
    server = RedisServer(binary, password="s3cr3t-pw")
    server.start()
    env = {**os.environ, "REDIS_URL": server.url}
    env.pop("BATON_TRANSFORMATIONS", None)
    with (tmp_path / "worker.log").open("ab") as log:
        worker = subprocess.Popen(
            [str(BIN / "baton"), "worker", "baton", "encode", "deploy", "--loglevel", "WARNING"],
            cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        done = subprocess.run(
            [str(BIN / "baton"), "submit", "workflows/encode_and_deploy.json", "-i",
             "fileLocation=s3://in/movie.mov", "--wait", "--timeout", "60", "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["output"] == {
            "cdn_url": "https://cdn.example.com/94614d6d5677/movie.mp4"}

        refused = subprocess.run(
            [str(BIN / "baton"), "status", "nope", "--redis-url",
             f"redis://:wrong@127.0.0.1:{server.port}/0"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            "baton: cannot reach Redis: invalid username-password pair or user is disabled."]
        assert "Traceback" not in refused.stderr
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        server.cleanup()
