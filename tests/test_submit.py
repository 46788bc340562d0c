"""Submitting: bad definitions, bad input and an unreachable Redis leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import (
    DefinitionError,
    InvalidInput,
    RunNotFound,
    StoreUnavailable,
    get_run,
    submit_workflow,
)
from app.runtime.state import get_store
from tests.support import RedisServer

SEED = Path(__file__).resolve().parents[1] / "workflows" / "encode_and_deploy.json"


def baton_keys() -> set[str]:
    return set(get_store().client.keys("baton:*"))


def test_invalid_definition_is_refused_with_every_problem_and_nothing_written(
    redis_server: RedisServer,
) -> None:
    before = baton_keys()
    definition = {
        "name": "broken", "version": 1, "schemaVersion": 2,
        "tasks": [
            {"name": "encod", "taskReferenceName": "encode_1", "type": "SIMPLE"},
            {"name": "deploy", "taskReferenceName": "d", "type": "SIMPLE",
             "inputParameters": {"fileLocation": "${encode.output.encodeLocation}"}},
        ],
    }

    with pytest.raises(DefinitionError) as caught:
        submit_workflow(definition, strict=True)  # the unknown reference is an error too

    assert [str(p) for p in caught.value.problems] == [
        "tasks[0].name: unknown transformation 'encod' (did you mean 'encode'?)",
        "tasks[1].inputParameters.fileLocation: ${encode.output.encodeLocation} names unknown task "
        "reference 'encode' (did you mean 'encode_1'?)",
    ]
    assert baton_keys() == before


def test_input_that_is_not_a_json_object_is_refused(redis_server: RedisServer) -> None:
    before = baton_keys()
    with pytest.raises(InvalidInput, match="input: must be a JSON object, not list"):
        submit_workflow(str(SEED), input=["s3://x"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"^input\.fileLocation: an object is not JSON data"):
        submit_workflow(str(SEED), input={"fileLocation": object()})
    assert baton_keys() == before


def test_unknown_run_id_is_a_clear_error(redis_server: RedisServer) -> None:
    with pytest.raises(RunNotFound, match="no run nope"):
        get_run("nope")


def test_submit_with_redis_down_raises_clearly_and_writes_nothing(
    redis_server: RedisServer,
) -> None:
    before = baton_keys()
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable, match="cannot reach Redis"):
            submit_workflow(str(SEED), input={"fileLocation": "s3://in/movie.mov"})
    finally:
        redis_server.start()
    assert baton_keys() == before
