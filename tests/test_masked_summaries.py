"""maskedFields with the workflow status listener: the run summary written inside Redis (Lua)
shows the run's input, output and reason masked as the client shows them (RunMask).
"""

from __future__ import annotations

import json
import uuid
from importlib import resources
from typing import Any

import pytest

from app import submit_workflow
from app.runtime.masking import MASK, RunMask
from app.runtime.state import get_store
from tests.support import scaled
from tests.test_state_events import entries, published

SECRET = "hunter2"
GIVEN = {"user": "ada", "password": SECRET, "pin": 98765,
         "profile": {"password": {"old": "nested-old", "n": [1234.5, "x"]}, "theme": "dark"}}


def definition(sink: str, *tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "masked_summary", "version": 1, "schemaVersion": 2,
            "maskedFields": ["password", "pin"], "workflowStatusListenerEnabled": True,
            "workflowStatusListenerSink": sink, "tasks": list(tasks), **fields}


ECHO = {"name": "echo", "taskReferenceName": "login", "inputParameters": {
    "password": "${workflow.input.password}", "copy": "${workflow.input.password}",
    "note": "pw=${workflow.input.password}!", "pin": "${workflow.input.pin}",
    "pin_copy": "${workflow.input.pin}", "old": "${workflow.input.profile.password.old}"}}


def test_a_completed_runs_summary_is_masked_as_the_client_shows_the_run(worker: Any) -> None:
    sink = f"test:{uuid.uuid4().hex}"
    run = submit_workflow(definition(sink, ECHO, outputParameters={
        "copy": "${login.output.copy}", "note": "${login.output.note}",
        "pin": "${login.output.pin_copy}", "old": "${login.output.old}", "user": "ada"}),
        GIVEN)

    output = run.result(timeout=scaled(30))
    [entry] = published(sink, 1)

    summary = entry["payload"]
    record = run.record()
    assert json.loads(summary["input"]) == record["input"]
    assert json.loads(summary["output"]) == output == record["output"] == {
        "copy": MASK, "note": f"pw={MASK}!", "pin": MASK, "old": MASK, "user": "ada"}
    assert json.loads(summary["input"])["profile"] == {"password": MASK, "theme": "dark"}
    raw = json.dumps(entry)
    for secret in (SECRET, "98765", "nested-old"):
        assert secret not in raw
    # the run store keeps the real values; steps computed with them
    assert json.loads(get_store().get_run(run.id)["output"])["copy"] == SECRET  # type: ignore[index]


def test_a_failed_runs_reason_is_masked_in_its_summary(worker: Any) -> None:
    sink = f"test:{uuid.uuid4().hex}"
    refuse = {"name": "refuse", "taskReferenceName": "r",
              "inputParameters": {"reason": "wrong password ${workflow.input.password}"}}
    run = submit_workflow(definition(sink, refuse), GIVEN)

    run.wait(timeout=scaled(30))
    [entry] = published(sink, 1)

    assert entry["payload"]["reasonForIncompletion"] == f"Refused: wrong password {MASK}"
    assert run.record()["reasonForIncompletion"] == entry["payload"]["reasonForIncompletion"]
    assert SECRET not in json.dumps(entry)


def test_a_run_without_masked_fields_publishes_its_values(worker: Any) -> None:
    sink = f"test:{uuid.uuid4().hex}"
    run = submit_workflow(definition(sink, ECHO, maskedFields=[]), GIVEN)
    run.wait(timeout=scaled(30))
    [entry] = published(sink, 1)
    assert json.loads(entry["payload"]["input"]) == GIVEN
    assert entries(sink) == [entry]


# --- the Lua masker against RunMask, on the same payloads ---------------------------------------

_PROBE = """
local names = {}
for _, name in ipairs(cjson.decode(ARGV[1])) do names[name] = true end
local found = {}
for i = 2, #ARGV do walk_json(ARGV[i], names, found) end
local secrets = secrets_of(found)
return {cjson.encode(secrets), walk_json(ARGV[2], names, nil, secrets, found)}
"""

PAYLOADS = [
    ({"password": "abcd", "x": "abcd", "y": "xxabcdxx", "abcd": 1}, []),
    ({"a": [{"password": [1, {"b": "s3cret-in-list"}]}, "s3cret-in-list"]}, []),
    ({"password": 12345, "n": 12345, "m": 123456, "f": 1.5, "t": True, "z": None}, []),
    ({"password": "é€ab", "s": "xé€aby", "short": "abc"}, []),
    ({"password": "abc", "s": "abc"}, []),  # under 4 characters: masked by name only
    ({"q": "a \"quoted\" \\ secret/"}, [{"password": "\"quoted\" \\ secret/"}]),
    ({"nested": {"deep": {"password": {"k": "v"}}}, "empty": [], "o": {}}, []),
    ({"other": "has long-secret and secret"}, [{"password": ["secret", "long-secret"]}]),
    ({"big": 12345678901234567890, "small": 0.1}, [{"password": 12345678901234567890}]),
]


@pytest.mark.parametrize(("shown", "elsewhere"), PAYLOADS)
def test_the_lua_masker_shows_what_run_mask_shows(
    redis_server: Any, shown: dict[str, Any], elsewhere: list[Any],
) -> None:
    folder = resources.files("app.store") / "lua"
    script = (folder / "json_mask.lua").read_text() + _PROBE
    names = ["password"]
    texts = [json.dumps(p, separators=(",", ":"), ensure_ascii=False)
             for p in (shown, *elsewhere)]
    secrets_text, masked = get_store().client.eval(script, 0, json.dumps(names), *texts)

    found: set[str] = set()
    from app.runtime.masking import _learn

    for payload in (shown, *elsewhere):
        _learn(payload, frozenset(names), found, inside=False)
    mask = RunMask(frozenset(names), tuple(sorted(found, key=lambda t: (-len(t), t))))
    assert (json.loads(secrets_text) if found else []) == list(mask.texts)
    assert json.loads(masked) == mask.value(shown)
