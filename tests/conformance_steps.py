"""Stand-in transformations for every SIMPLE task name in Conductor's conformance files.

Each echoes its input as its output and adds the outputs a test scripts for its name (the
Redis hash `test:conformance:outputs`), so a workflow that needs a worker's particular
output (a dynamic fork's task list) runs. A stand-in fails when any input value is the
string "FAIL!" or its scripted output holds `"__fail__": true`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from app import transformation

SCRIPTED: Final = "test:conformance:outputs"
NAMES: Final = (
    "integration_task_0", "integration_task_1", "integration_task_2", "integration_task_3",
    "integration_task_4", "integration_task_5", "integration_task_20", "simple",
    "simple_1", "simple_2", "simple_3", "simple_task_in_sub_wf", "task_1", "task_4",
    "task_10", "task_11", "task_30", "task_optional", "task_permissive", "task_rt",
)


def _stand_in(name: str) -> Callable[..., Any]:
    def run(**values: Any) -> dict[str, Any]:
        if "FAIL!" in values.values():
            raise RuntimeError(f"{name} was told to fail")
        from app.runtime.state import get_store

        stored = get_store().client.hget(SCRIPTED, name)
        scripted = json.loads(stored) if stored else {}
        if scripted.pop("__fail__", False):
            raise RuntimeError(f"{name} was scripted to fail")
        return {**values, **scripted}

    run.__name__ = name
    return run


for _name in NAMES:
    transformation(name=_name, queue="conformance")(_stand_in(_name))
