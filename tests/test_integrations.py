"""HTTP against local servers and EVENT into a Redis stream, on real workers.

Local servers listen on 127.0.0.1, which the default host policy refuses (`private`), so
this module's worker allows 127.0.0.0/8: Baton's own Redis, on the same address, stays
refused all the same. Settings are read once per process (`get_settings()` is cached);
`baton_settings(...)` changes the environment and clears that cache, and the in-process worker
reads the new values at its next HTTP step.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from app import RunStatus, StepStatus, WorkflowFailed, submit_workflow
from app.celery_app import declare_queues
from app.runtime.http_policy import HttpConfigError, HttpRefused, policy_for
from app.runtime.state import get_store
from tests.support import RedisServer, baton_settings, scaled, send_json, serving, wait_for

ROOT = Path(__file__).resolve().parents[1]
LOCAL = "127.0.0.0/8"


@pytest.fixture(scope="module", autouse=True)
def local_hosts_allowed() -> Iterator[None]:
    with baton_settings(http_allow=LOCAL):
        yield


class _Service(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []
    trickling = threading.Semaphore(0)
    stop_trickling = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(f"POST {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        sent = json.loads(self.rfile.read(length) or b"null")
        status = 200 if self.path == "/ok" else 503
        if self.path.startswith("/redirect"):
            self._redirect()
            return
        send_json(self, status, {"echo": sent, "auth": self.headers.get("X-Token")})

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(f"GET {self.path}")
        path = urlsplit(self.path).path
        if path == "/trickle":
            self._trickle()
        elif path == "/stall":
            self._stall()
        elif path == "/big":
            self._big()
        elif path.startswith("/redirect"):
            self._redirect()
        else:
            send_json(self, 200, {"path": self.path, "host": self.headers.get("Host")})

    def _redirect(self) -> None:
        """`/redirect?to=URL` points at URL; `/redirect?hops=n` at itself, n - 1 times."""
        query = parse_qs(urlsplit(self.path).query)
        if "to" in query:
            target = query["to"][0]
        else:
            hops = int(query["hops"][0])
            target = f"/redirect?hops={hops - 1}" if hops > 1 else "/final"
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _trickle(self) -> None:
        """Headers at once, then one byte every 0.2 s: no read timeout ever fires."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.trickling.release()
        try:
            for _ in range(1500):  # at most five minutes, whatever happens
                if self.stop_trickling.wait(0.2):
                    break
                self.wfile.write(b".")
                self.wfile.flush()
        except OSError:
            pass  # the client gave up
        self.close_connection = True

    def _stall(self) -> None:
        """Headers and one byte, then nothing (until the test ends or the client leaves)."""
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b".")
        self.wfile.flush()
        self.stop_trickling.wait(60)
        self.close_connection = True

    def _big(self) -> None:
        """`/big?size=n`: n bytes, chunked (no Content-Length), or declared with `declare`."""
        query = parse_qs(urlsplit(self.path).query)
        size = int(query["size"][0])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if "declare" in query:
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(b"x" * size)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for start in range(0, size, 1000):
                chunk = b"x" * min(1000, size - start)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    with serving(_Service) as url:
        yield url
        _Service.stop_trickling.set()


def http_workflow(uri: str, method: str = "POST", **request: Any) -> dict[str, Any]:
    """One HTTP step; POST and other methods with a body send `{"order": input.order}`."""
    if method not in ("GET", "HEAD"):
        request.setdefault("body", {"order": "${workflow.input.order}"})
    return {"name": "http", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "call", "taskReferenceName": "call", "type": "HTTP", "inputParameters": {
            "http_request": {"uri": uri, "method": method, "headers": {"X-Token": "t"},
                             **request}}}],
        "outputParameters": {"answer": "${call.output.response.body}",
                             "code": "${call.output.response.statusCode}"}}


def trickling() -> None:
    """Trickling and stalling answers go on until the test ends; none is counted yet."""
    _Service.stop_trickling.clear()
    while _Service.trickling.acquire(blocking=False):
        pass


def failure(uri: str, method: str = "GET", timeout: float = 30, **request: Any) -> Any:
    """The error a one-step HTTP run failed with (the run must fail)."""
    run = submit_workflow(http_workflow(uri, method, **request), input={"order": 1})
    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=scaled(timeout))
    assert caught.value.error is not None
    return caught.value


def test_http_sends_the_request_and_records_the_response(worker: Any, service: str) -> None:
    run = submit_workflow(http_workflow(f"{service}/ok"), input={"order": 7})
    assert run.result(timeout=30) == {"answer": {"echo": {"order": 7}, "auth": "t"},
                                      "code": 200}


def test_http_fails_the_step_on_an_answer_outside_2xx(worker: Any, service: str) -> None:
    run = submit_workflow(http_workflow(f"{service}/down"), input={"order": 7})
    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=30)
    assert caught.value.error is not None
    assert caught.value.error["type"] == "HttpStatusError"
    assert "answered 503" in caught.value.error["message"]


def test_a_trickling_server_fails_the_step_at_the_overall_deadline(
    worker: Any, service: str
) -> None:
    trickling()
    with baton_settings(http_allow=LOCAL, http_deadline="1"):
        started = time.monotonic()
        failed = failure(f"{service}/trickle")
    assert failed.error["type"] == "HttpTimeout"
    assert "1 s deadline (BATON_HTTP_DEADLINE)" in failed.error["message"]
    assert time.monotonic() - started < scaled(15)


def test_a_task_timeout_lowers_the_setting_and_never_raises_it(
    worker: Any, service: str
) -> None:
    # the server stalls after its first byte; the task asks for an hour, the setting 0.5 s
    trickling()
    with baton_settings(http_allow=LOCAL, http_read_timeout="0.5"):
        failed = failure(f"{service}/stall", readTimeOut=3_600_000)
    assert failed.error["type"] == "OperatorError"
    assert "ReadTimeout" in failed.error["message"]


def test_a_method_that_is_not_http_is_refused_before_any_connection(
    worker: Any, service: str
) -> None:
    seen = len(_Service.seen)
    failed = failure(f"{service}/ok", method="SET")
    assert failed.error["type"] == "HttpRefused"
    assert "'SET' is not an HTTP method" in failed.error["message"]
    assert failed.status == "FAILED"
    assert len(_Service.seen) == seen


def test_a_scheme_other_than_http_is_refused(worker: Any) -> None:
    failed = failure("file:///etc/passwd")
    assert failed.error["type"] == "HttpRefused"
    assert "only http and https" in failed.error["message"]


@pytest.mark.parametrize("allow", ["", LOCAL, "localhost"])
def test_batons_own_redis_is_refused_even_where_its_network_is_allowed(
    worker: Any, redis_server: RedisServer, allow: str
) -> None:
    port = redis_server.port
    with baton_settings(http_allow=allow):
        failed = failure(f"http://127.0.0.1:{port}/")
        via_name = failure(f"http://localhost:{port}/")
    assert failed.error["type"] == "HttpRefused"
    assert f"127.0.0.1:{port}" in failed.error["message"]
    assert "Redis server Baton runs on" in failed.error["message"]
    assert via_name.error["type"] == "HttpRefused"
    assert "BATON_HTTP_ALLOW" in via_name.error["message"]


def test_cloud_metadata_is_refused_at_once_and_never_retried(worker: Any) -> None:
    workflow = http_workflow("http://169.254.169.254/latest/meta-data/", method="GET")
    workflow["tasks"][0]["retryCount"] = 3
    started = time.monotonic()
    run = submit_workflow(workflow)
    with pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=30)
    error = caught.value.error or {}
    assert error["type"] == "HttpRefused"
    assert "host '169.254.169.254' (address 169.254.169.254, port 80)" in error["message"]
    assert "BATON_HTTP_DENY refuses 169.254.0.0/16" in error["message"]
    assert time.monotonic() - started < scaled(10)  # no connect timeout waited for
    assert run.steps["call"].attempts == 1
    assert run.steps["call"].status is StepStatus.FAILED_WITH_TERMINAL_ERROR


def test_redirects_are_followed_and_each_target_is_checked(worker: Any, service: str) -> None:
    run = submit_workflow(http_workflow(f"{service}/redirect?hops=3", method="GET"),
                          input={"order": 1})
    assert run.result(timeout=30)["answer"]["path"] == "/final"

    failed = failure(f"{service}/redirect?to=http://169.254.169.254/latest/meta-data/")
    assert failed.error["type"] == "HttpRefused"
    assert "169.254.169.254" in failed.error["message"]

    failed = failure(f"{service}/redirect?to=http://[::ffff:10.0.0.1]:8080/")
    assert failed.error["type"] == "HttpRefused"
    assert "10.0.0.0/8" in failed.error["message"]


def test_too_many_redirects_fail_the_step(worker: Any, service: str) -> None:
    with baton_settings(http_allow=LOCAL, http_max_redirects="2"):
        failed = failure(f"{service}/redirect?hops=3")
    assert failed.error["type"] == "HttpTooManyRedirects"
    assert "more than 2 redirects" in failed.error["message"]


@pytest.mark.parametrize("declared", [False, True])
def test_an_answer_over_the_size_cap_fails_the_step(
    worker: Any, service: str, declared: bool
) -> None:
    uri = f"{service}/big?size=100000" + ("&declare=1" if declared else "")
    with baton_settings(http_allow=LOCAL, http_max_response_bytes="4096"):
        failed = failure(uri)
        run = submit_workflow(http_workflow(f"{service}/big?size=4000", method="GET"))
        assert run.result(timeout=30)["answer"] == "x" * 4000
    assert failed.error["type"] == "HttpResponseTooLarge"
    assert "4096 bytes allowed" in failed.error["message"]
    assert ("100000 bytes" in failed.error["message"]) is declared


def test_an_allow_list_of_networks_and_names_opens_only_what_it_names(
    worker: Any, service: str
) -> None:
    port = int(service.rsplit(":", 1)[1])
    with baton_settings(http_allow="127.0.0.1/32", http_deny="*"):
        run = submit_workflow(http_workflow(f"{service}/ok"), input={"order": 1})
        assert run.result(timeout=30)["code"] == 200
    with baton_settings(http_allow="*.example.com,localhost", http_deny="*"):
        run = submit_workflow(http_workflow(f"http://localhost:{port}/ok"), input={"order": 1})
        assert run.result(timeout=30)["code"] == 200
        failed = failure(f"{service}/ok")
    assert failed.error["type"] == "HttpRefused"
    assert "BATON_HTTP_DENY is '*'" in failed.error["message"]


def test_https_goes_to_the_checked_address_and_verifies_the_hostname(
    worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # the steps' CA bundle
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    servers = []
    for name in ("localhost", "other.test"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(name).configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        ports = [server.server_address[1] for server in servers]
        run = submit_workflow(http_workflow(f"https://localhost:{ports[0]}/x", method="GET"))
        assert run.result(timeout=30)["answer"] == {"path": "/x",
                                                    "host": f"localhost:{ports[0]}"}
        failed = failure(f"https://localhost:{ports[1]}/x")  # right address, wrong name
        assert "certificate verify failed" in failed.error["message"]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_the_host_policy_reads_names_wildcards_networks_and_endpoints() -> None:
    policy = policy_for("*.example.com,api.other.org,203.0.113.0/24,10.1.2.3,db.internal:8080",
                        "private,198.51.100.0/24", "redis://127.0.0.1:6379/0")

    def allowed(host: str, port: int, *addresses: str) -> bool:
        try:
            policy.check(host, port, [ipaddress.ip_address(a) for a in addresses])
        except HttpRefused:
            return False
        return True

    assert allowed("a.b.example.com", 443, "10.0.0.7")  # a name allowed: any address
    assert not allowed("example.com", 443, "10.0.0.7")  # `*.` names subdomains only
    assert allowed("API.Other.org.", 80, "127.0.0.1")
    assert allowed("public.test", 80, "93.184.216.34")
    assert not allowed("public.test", 80, "93.184.216.34", "192.168.1.1")  # every address
    assert not allowed("x.test", 80, "198.51.100.9")
    assert allowed("x.test", 80, "203.0.113.9")  # allow wins over deny
    assert allowed("x.test", 80, "10.1.2.3") and not allowed("x.test", 80, "10.1.2.4")
    assert allowed("db.internal", 8080, "10.9.9.9")
    assert not allowed("db.internal", 8081, "10.9.9.9")
    for address in ("::ffff:169.254.169.254", "fe80::1", "fd00::1", "::1", "::",
                    "100.64.0.1", "224.0.0.1", "0.0.0.0", "64:ff9b::a9fe:a9fe"):
        assert not allowed("x.test", 80, address), address
    assert allowed("x.test", 80, "2606:4700::1111")
    for address in ("127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1"):  # Baton's Redis
        assert not allowed("a.example.com", 6379, address), address
    assert policy_for("127.0.0.1:6379", "", "redis://127.0.0.1:6379/0").check(
        "127.0.0.1", 6379, [ipaddress.ip_address("127.0.0.1")]) is None
    assert policy_for("", "", "redis://127.0.0.1:6379/0").check(
        "10.0.0.1", 80, [ipaddress.ip_address("10.0.0.1")]) is None  # empty deny
    for allow, deny in (("not a host!", ""), ("", "example.com")):
        with pytest.raises(HttpConfigError):
            policy_for(allow, deny, "redis://127.0.0.1:6379/0")


def test_event_publishes_the_input_to_the_sinks_stream(worker: Any) -> None:
    run = submit_workflow({"name": "events", "version": 1, "schemaVersion": 2, "tasks": [
        {"name": "emit", "taskReferenceName": "emit", "type": "EVENT", "sink": "sqs:orders",
         "inputParameters": {"order": "${workflow.input.order}"}}]}, input={"order": 9})

    assert run.wait(timeout=30) is RunStatus.COMPLETED
    produced = run.steps["emit"].output
    entries = get_store().client.xrange(produced["event_produced"], produced["eventId"],
                                        produced["eventId"])
    assert produced["event_produced"] == "baton:events:sqs:orders"
    assert json.loads(entries[0][1]["payload"]) == {"order": 9}
    assert entries[0][1]["workflowId"] == run.id


# --- the I/O queue: slow HTTP steps never hold Baton's control tasks ----------------------

CONTROL_WORKFLOW = {"name": "control", "version": 1, "schemaVersion": 2, "tasks": [
    {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN", "forkTasks": [
        [{"name": "a", "taskReferenceName": "a", "type": "INLINE", "inputParameters": {
            "evaluatorType": "javascript", "expression": "1 + 1"}}],
        [{"name": "b", "taskReferenceName": "b", "type": "SET_VARIABLE",
          "inputParameters": {"seen": True}}]]},
    {"name": "join", "taskReferenceName": "join", "type": "JOIN", "joinOn": ["a", "b"]},
    {"name": "pick", "taskReferenceName": "pick", "type": "SWITCH",
     "evaluatorType": "value-param", "expression": "which",
     "inputParameters": {"which": "${a.output.result}"},
     "decisionCases": {"2": [{"name": "two", "taskReferenceName": "two", "type": "INLINE",
                              "inputParameters": {"evaluatorType": "javascript",
                                                  "expression": "'two'"}}]}}],
    "outputParameters": {"picked": "${two.output.result}"}}


class _Worker:
    """A `celery worker` process (prefork, the Procfile's way) on one queue."""

    def __init__(self, queue: str, log: Path, env: dict[str, str]) -> None:
        self.name = f"{queue}-{uuid.uuid4().hex[:6]}"
        command = [sys.executable, "-m", "celery", "-A", "app", "worker", "-P", "prefork",
                   "-c", "2", "-Q", queue, "-n", f"{self.name}@%h", "-l", "WARNING",
                   "--without-heartbeat", "--without-mingle", "--without-gossip"]
        with log.open("ab") as sink:
            self.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env},
                                            stdout=sink, stderr=sink, start_new_session=True)

    def answers(self) -> bool:
        import app

        replies = app.celery.control.ping(timeout=0.5)
        return any(self.name in name for reply in replies for name in reply)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=scaled(30))


@pytest.mark.timeout(120)
def test_two_trickling_http_steps_do_not_delay_control_tasks(
    redis_server: RedisServer, service: str, tmp_path: Path
) -> None:
    # Queues of this test's own, so that no other worker of the session takes its work: a
    # control worker with two processes, an I/O worker with two.
    suffix = uuid.uuid4().hex[:6]
    queues = {"control_queue": f"sep.{suffix}", "io_queue": f"sep.{suffix}.io"}
    env = {f"BATON_{k.upper()}": v for k, v in queues.items()}
    env["BATON_HTTP_ALLOW"] = LOCAL
    with baton_settings(http_allow=LOCAL, **queues):
        declare_queues()
        workers = [_Worker(queue, tmp_path / f"{queue}.log", env) for queue in queues.values()]
        trickling()
        try:
            wait_for(lambda: all(w.answers() for w in workers), timeout=60,
                     what="the control and I/O workers to answer a ping")
            slow = [submit_workflow(http_workflow(f"{service}/trickle", method="GET"))
                    for _ in range(2)]
            for _ in slow:  # both steps are receiving their trickle
                wait_for(lambda: _Service.trickling.acquire(blocking=False), timeout=30,
                         what="the HTTP steps to reach the trickling server")

            control = submit_workflow(CONTROL_WORKFLOW)

            assert control.result(timeout=scaled(30)) == {"picked": "two"}
            assert [run.status for run in slow] == [RunStatus.RUNNING] * 2
            _Service.stop_trickling.set()  # the slow steps fail now: nothing is left open
            for run in slow:
                wait_for(lambda: run.status is RunStatus.FAILED, timeout=30,  # noqa: B023
                         what="the slow HTTP steps to fail once their server hangs up")
        finally:
            _Service.stop_trickling.set()
            for worker in workers:
                worker.stop()
