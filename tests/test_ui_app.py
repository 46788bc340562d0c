"""The workflow view's web app over a real Redis and real workers: the runs list (filters,
pages), the run page and its snapshot, basic auth, CSRF refusals, and the lifecycle actions.
Driven with Starlette's TestClient; the live stream against a real uvicorn server."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from app import RunStatus, StepStatus, submit_workflow
from app.cli import main
from app.definitions import register_workflow
from app.runtime.state import get_store
from app.ui import UiConfig, create_app
from app.ui.security import Credentials
from app.ui.server import serving
from tests.support import free_port, wait_for
from tests.test_ui_index import entered as gate_entered
from tests.test_ui_index import open_gate as gate_open
from tests.test_ui_index import task as step
from tests.test_ui_index import wf

AUTH = ("viewer", "s3cret-pass")


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def config(**extra: Any) -> UiConfig:
    return UiConfig(store=get_store, credentials=Credentials(*AUTH),
                    flower_url="http://flower.example:5555", **extra)


@pytest.fixture()
def client() -> Iterator[TestClient]:
    with TestClient(create_app(config()), headers=basic(*AUTH)) as found:
        yield found


def csrf_token(client: TestClient, run_id: str) -> str:
    page = client.get(f"/runs/{run_id}")
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


# -- auth -------------------------------------------------------------------------------------


def test_every_route_asks_for_basic_auth() -> None:
    with TestClient(create_app(config())) as anonymous:
        for path in ("/runs", "/api/runs", "/static/ui.css", "/definitions"):
            answer = anonymous.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"] == 'Basic realm="Baton"'
        assert anonymous.get("/runs", headers=basic("viewer", "wrong")).status_code == 401
        assert anonymous.get("/runs", headers=basic(*AUTH)).status_code == 200


def test_the_command_refuses_to_start_without_auth_unless_loopback_and_no_auth() -> None:
    runner = CliRunner()
    env = {"BATON_UI_AUTH": ""}
    refused = runner.invoke(main, ["ui"], env=env)
    assert refused.exit_code == 2
    assert "BATON_UI_AUTH is not set" in refused.output
    wide = runner.invoke(main, ["ui", "--no-auth", "--host", "0.0.0.0"], env=env)
    assert wide.exit_code == 2
    assert "--no-auth: only with --host 127.0.0.1" in wide.output
    bad = runner.invoke(main, ["ui"], env={"BATON_UI_AUTH": "nopassword"})
    assert bad.exit_code == 2
    assert "BATON_UI_AUTH: expected user:password" in bad.output


# -- the runs list ----------------------------------------------------------------------------


def test_the_list_filters_by_status_workflow_and_correlation_and_pages(
        worker: Any, client: TestClient) -> None:
    # Given three completed runs and one failed run of one workflow
    name = f"ui_list_{uuid.uuid4().hex[:8]}"
    done = [submit_workflow(wf(name, step("a", v=i)), correlation_id=f"{name}-c{i % 2}")
            for i in range(3)]
    failed = submit_workflow(wf(name, step("bad", "refuse", reason="broken")))
    for run in done:
        assert run.wait(timeout=30) is RunStatus.COMPLETED
    assert failed.wait(timeout=30) is RunStatus.FAILED

    # Then each filter lists the runs it names, newest first
    listed = client.get("/api/runs", params={"workflow": name}).json()
    assert [r["workflowId"] for r in listed["runs"]] == [failed.id] + [r.id for r in done[::-1]]
    assert listed["total"] == 4
    only_failed = client.get("/api/runs", params={"workflow": name, "status": "FAILED"}).json()
    assert [r["workflowId"] for r in only_failed["runs"]] == [failed.id]
    assert only_failed["runs"][0]["reasonForIncompletion"]
    by_correlation = client.get("/api/runs", params={"correlation": f"{name}-c0"}).json()
    assert {r["workflowId"] for r in by_correlation["runs"]} == {done[0].id, done[2].id}

    # And pages follow on from their cursor
    first = client.get("/api/runs", params={"workflow": name, "limit": 3}).json()
    second = client.get("/api/runs", params={"workflow": name, "limit": 3,
                                             "after": first["next"]}).json()
    assert [r["workflowId"] for r in first["runs"] + second["runs"]] == \
        [r["workflowId"] for r in listed["runs"]]
    assert second["next"] is None

    # And the HTML list shows the same runs, with a link to the next page
    page = client.get("/runs", params={"workflow": name, "limit": 3})
    assert page.status_code == 200
    assert all(f'data-run="{r["workflowId"]}"' in page.text for r in first["runs"])
    assert 'id="next-page"' in page.text


def test_a_bad_filter_is_named_precisely(client: TestClient) -> None:
    answer = client.get("/api/runs", params={"since": "yesterday"})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("since: 'yesterday' is not a time")
    assert client.get("/api/runs", params={"status": "DONE"}).json()["error"].startswith(
        "status: unknown status 'DONE'")
    assert client.get("/api/runs", params={"limit": "0"}).status_code == 400
    page = client.get("/runs", params={"after": "nonsense"})
    assert page.status_code == 400 and "after: " in page.text
    window = client.get("/api/runs", params={"since": "2001-01-01T00:00", "until": "2001-01-02"})
    assert window.json()["runs"] == []


# -- the run page -----------------------------------------------------------------------------


def test_the_run_page_shows_the_graph_steps_and_a_failed_steps_error(
        worker: Any, client: TestClient) -> None:
    name = f"ui_run_{uuid.uuid4().hex[:8]}"
    run = submit_workflow(wf(name, step("first", v=1), step("broken", "refuse", reason="no way")))
    assert run.wait(timeout=30) is RunStatus.FAILED

    page = client.get(f"/runs/{run.id}")
    assert page.status_code == 200
    assert 'data-ref="first"' in page.text and 'data-ref="broken"' in page.text
    snapshot = client.get(f"/api/runs/{run.id}").json()
    assert snapshot["run"]["status"] == "FAILED"
    broken = snapshot["steps"]["broken"]
    assert broken["status"] == StepStatus.FAILED
    assert "no way" in broken["error"]["message"]
    assert broken["flower"] == f"http://flower.example:5555/task/{broken['taskId']}"
    assert snapshot["steps"]["first"]["output"] == {"v": 1}
    assert client.get(f"/runs/{uuid.uuid4()}").status_code == 404
    assert client.get(f"/api/runs/{uuid.uuid4()}").status_code == 404


def test_loop_iterations_and_sub_workflow_children_are_marked(
        worker: Any, client: TestClient) -> None:
    name = f"ui_loop_{uuid.uuid4().hex[:8]}"
    child = wf(f"{name}_child", step("inner", v=2))
    loop = {"name": "do_while", "taskReferenceName": "loop", "type": "DO_WHILE",
            "loopCondition": "$.loop['iteration'] < 2",
            "inputParameters": {}, "loopOver": [step("body", i="${loop.output.iteration}")]}
    sub = {"name": "sub", "taskReferenceName": "sub", "type": "SUB_WORKFLOW",
           "subWorkflowParam": {"name": child["name"], "version": 1, "workflowDefinition": child}}
    run = submit_workflow(wf(name, loop, sub))
    assert run.wait(timeout=60) is RunStatus.COMPLETED
    steps = client.get(f"/api/runs/{run.id}").json()["steps"]
    iterations = [s for s in steps.values() if s["base"] == "body" and s["iteration"]]
    assert len(iterations) >= 2
    assert steps["sub"]["child"]
    assert client.get(f"/api/runs/{steps['sub']['child']}").json()["run"]["status"] == \
        "COMPLETED"


# -- CSRF and actions -------------------------------------------------------------------------


def test_posts_without_a_matching_csrf_token_or_from_another_origin_are_refused(
        worker: Any, client: TestClient) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(wf(f"ui_csrf_{key[:8]}", step("held", "gate", key=key)))
    wait_for(lambda: gate_entered(key), timeout=30, what="the step to start")
    token = csrf_token(client, run.id)
    url = f"/runs/{run.id}/actions/pause"

    with TestClient(create_app(config()), headers=basic(*AUTH)) as fresh:  # no cookie yet
        assert fresh.post(url, data={"csrf": token}).status_code == 403
    assert client.post(url, data={}).status_code == 403
    assert client.post(url, data={"csrf": token + "x"}).status_code == 403
    forged = client.post(url, data={"csrf": token}, headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403 and "cross-origin" in forged.text
    sibling = client.post(url, data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"})
    assert sibling.status_code == 403
    assert run.status is RunStatus.RUNNING  # nothing was done

    done = client.post(url, data={"csrf": token}, headers={"Origin": "http://testserver"},
                       follow_redirects=False)
    assert done.status_code == 303
    assert "notice=pause" in done.headers["location"]
    assert run.status is RunStatus.PAUSED
    cancel = client.post(f"/runs/{run.id}/actions/cancel", headers={
        "X-CSRF-Token": token, "Accept": "application/json"})
    assert cancel.json() == {"ok": True, "message": "cancel: cancelled"}
    assert run.status is RunStatus.TERMINATED
    gate_open(key)


def test_actions_resume_retry_rerun_restart_and_complete_a_waiting_step(
        worker: Any, client: TestClient) -> None:
    name = f"ui_actions_{uuid.uuid4().hex[:8]}"
    waiting = submit_workflow(wf(name, {"name": "wait", "taskReferenceName": "approve",
                                        "type": "WAIT"}, step("after", v=1)))
    wait_for(lambda: "approve" in waiting.steps and
             waiting.steps["approve"].status is StepStatus.IN_PROGRESS, timeout=30,
             what="the WAIT step to wait")
    token = csrf_token(client, waiting.id)

    def act(run_id: str, action: str, **form: str) -> dict[str, Any]:
        answer = client.post(f"/runs/{run_id}/actions/{action}", data={"csrf": token, **form},
                             headers={"Accept": "application/json"})
        return dict(answer.json(), status=answer.status_code)

    bad = act(waiting.id, "complete", step="approve", output="[1]")
    assert bad["status"] == 400 and bad["message"] == "output: must be a JSON object"
    assert act(waiting.id, "complete", step="approve", output='{"ok": true}')["ok"]
    assert waiting.wait(timeout=30) is RunStatus.COMPLETED
    assert waiting.steps["approve"].output == {"ok": True}

    refused = act(waiting.id, "resume")
    assert refused["status"] == 409 and "is not PAUSED" in refused["message"]
    assert act(waiting.id, "rerun", step="after")["ok"]
    assert waiting.wait(timeout=30) is RunStatus.COMPLETED
    assert act(waiting.id, "unknown")["status"] == 404

    flaky_key = uuid.uuid4().hex
    failing = submit_workflow(wf(name, step("once", "flaky", key=flaky_key, failures=3)))
    assert failing.wait(timeout=30) is RunStatus.FAILED
    assert act(failing.id, "retry")["ok"]
    assert failing.wait(timeout=30) is RunStatus.COMPLETED
    assert act(failing.id, "restart")["ok"]
    assert failing.wait(timeout=30) is RunStatus.COMPLETED


# -- live stream ------------------------------------------------------------------------------


def test_the_live_stream_sends_the_snapshot_then_only_changes(worker: Any) -> None:
    key = uuid.uuid4().hex
    run = submit_workflow(wf(f"ui_live_{key[:8]}", step("held", "gate", key=key),
                             step("next", v=3)))
    wait_for(lambda: gate_entered(key), timeout=30, what="the step to start")
    with serving(config(poll_seconds=0.1), port=free_port()) as base, \
            httpx.stream("GET", f"{base}/runs/{run.id}/events", auth=AUTH,
                         timeout=30) as stream:
        events = _events(stream.iter_lines())
        kind, first = next(events)
        assert kind == "snapshot" and first["run"]["status"] == "RUNNING"
        gate_open(key)
        seen: dict[str, Any] = {}
        for kind, data in events:
            assert kind == "changes"
            assert "held" not in data.get("steps", {}) or data["steps"]["held"] != \
                first["steps"].get("held")
            seen.update(data.get("steps", {}))
            if (data.get("run") or {}).get("status") == "COMPLETED":
                break
    assert seen["next"]["output"] == {"v": 3}


def _events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind:
            yield kind, json.loads(line[6:])
            kind = None


# -- definitions ------------------------------------------------------------------------------


def test_the_definitions_page_lists_registered_workflows_with_their_graph(
        client: TestClient) -> None:
    name = f"ui_def_{uuid.uuid4().hex[:8]}"
    register_workflow(wf(name, step("one"), step("two")))
    listing = client.get("/definitions")
    assert f'href="/definitions/{name}/1"' in listing.text
    page = client.get(f"/definitions/{name}/1")
    assert page.status_code == 200
    assert 'data-ref="one"' in page.text and 'data-ref="two"' in page.text
    assert client.get(f"/definitions/{name}/9").status_code == 404


# -- baton run --ui ---------------------------------------------------------------------------


def test_baton_run_with_ui_serves_the_view_while_the_run_runs(
        worker: Any, tmp_path: Any) -> None:
    import threading

    key = uuid.uuid4().hex
    name = f"ui_cli_{key[:8]}"
    definition = tmp_path / "held.json"
    definition.write_text(json.dumps(wf(name, step("held", "gate", key=key))))
    port = free_port()
    result: dict[str, Any] = {}

    def run() -> None:
        result["run"] = CliRunner().invoke(main, ["run", str(definition), "--ui"],
                                           env={"BATON_UI_PORT": str(port)})

    thread = threading.Thread(target=run)
    thread.start()
    try:
        def listed() -> list[Any] | None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/runs",
                                   params={"workflow": name}, timeout=5)
            except httpx.TransportError:
                return None
            return answer.json()["runs"] or None

        runs = wait_for(listed, timeout=30, what="the view to list the run")
        assert runs[0]["status"] == "RUNNING"
    finally:
        gate_open(key)
        thread.join(timeout=60)
    assert result["run"].exit_code == 0, result["run"].output
    assert f"workflow view: http://127.0.0.1:{port}/runs" in result["run"].output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/runs", timeout=2)
