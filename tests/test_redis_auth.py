"""A Redis that asks for a password, and one that speaks only TLS (`rediss://`): the URL's
credentials and TLS settings reach the broker, the result backend and the run store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import RedisServer, TlsFiles, redis_binary

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _submit_the_seed_workflow(server: RedisServer, tmp_path: Path) -> subprocess.Popen[bytes]:
    """Start a worker process on `server`, run the seed workflow through `baton submit` and
    check its output; returns the worker, still running."""
    env = {**os.environ, "REDIS_URL": server.url}
    env.pop("BATON_TRANSFORMATIONS", None)
    with (tmp_path / "worker.log").open("ab") as log:
        worker = subprocess.Popen(
            [str(BIN / "baton"), "worker", "baton", "encode", "deploy", "--loglevel", "WARNING"],
            cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    done = subprocess.run(
        [str(BIN / "baton"), "submit", "workflows/encode_and_deploy.json", "-i",
         "fileLocation=s3://in/movie.mov", "--wait", "--timeout", "60", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        _stop(worker)
    assert done.returncode == 0, done.stderr + (tmp_path / "worker.log").read_text()
    assert json.loads(done.stdout)["output"] == {
        "cdn_url": "https://cdn.example.com/94614d6d5677/movie.mp4"}
    return worker


def _stop(worker: subprocess.Popen[bytes]) -> None:
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=60)


def test_a_workflow_runs_on_a_redis_with_a_password(tmp_path: Path) -> None:
    binary = redis_binary()
    assert binary is not None
    server = RedisServer(binary, password="s3cr3t-pw")
    server.start()
    worker = None
    try:
        worker = _submit_the_seed_workflow(server, tmp_path)
        env = {**os.environ, "REDIS_URL": server.url}

        refused = subprocess.run(
            [str(BIN / "baton"), "status", "nope", "--redis-url",
             f"redis://:wrong@127.0.0.1:{server.port}/0"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            "baton: cannot reach Redis: invalid username-password pair or user is disabled."]
        assert "Traceback" not in refused.stderr
    finally:
        if worker is not None:
            _stop(worker)
        server.cleanup()


def test_a_workflow_runs_on_a_redis_that_speaks_only_tls(tmp_path: Path) -> None:
    import trustme

    binary = redis_binary()
    assert binary is not None
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(cert=tmp_path / "server.pem", key=tmp_path / "server.key",
                     ca=tmp_path / "ca.pem")
    issued.cert_chain_pems[0].write_to_path(str(files.cert))
    issued.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    server = RedisServer(binary, tls=files)
    try:
        server.start()
    except RuntimeError as exc:
        if "TLS" in str(exc) or "tls" in str(exc):
            pytest.skip(f"this redis-server has no TLS: {exc}")
        raise
    worker = None
    try:
        assert server.url.startswith("rediss://")
        worker = _submit_the_seed_workflow(server, tmp_path)

        # the same server over plain TCP is refused: the run really went over TLS
        env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{server.port}/0"}
        plain = subprocess.run([str(BIN / "baton"), "status", "nope"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
        assert plain.returncode == 1
        assert plain.stderr.startswith("baton: cannot reach Redis")
        assert "Traceback" not in plain.stderr
    finally:
        if worker is not None:
            _stop(worker)
        server.cleanup()
