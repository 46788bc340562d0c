"""Loading a definition from a dict, JSON or YAML text, or a file; errors say where.

Pure tests of app.dsl.load: no Redis, no Celery.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.dsl.load import load_definition
from app.errors import DefinitionError

SMALL: dict[str, Any] = {
    "name": "wf",
    "version": 1,
    "schemaVersion": 2,
    "tasks": [
        {
            "name": "a",
            "taskReferenceName": "a",
            "type": "SIMPLE",
            "inputParameters": {"x": "${workflow.input.x}"},
        }
    ],
}

SMALL_YAML = """\
name: wf
version: 1
schemaVersion: 2
tasks:
  - name: a
    taskReferenceName: a
    type: SIMPLE
    inputParameters:
      x: ${workflow.input.x}
"""


def load_problems(source: Any) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        load_definition(source)
    return [str(p) for p in caught.value.problems]


def test_load_from_a_dict_text_and_files(tmp_path: Path) -> None:
    # Given the same definition as a dict, JSON text, YAML text, a .json and a .yaml file
    json_file = tmp_path / "wf.json"
    json_file.write_text(json.dumps(SMALL, indent=2))
    yaml_file = tmp_path / "wf.yaml"
    yaml_file.write_text(SMALL_YAML)
    sources: list[Any] = [
        SMALL,
        json.dumps(SMALL),
        SMALL_YAML,
        json_file,
        yaml_file,
        str(yaml_file),
    ]

    # When each is loaded, Then each gives the same model
    loaded = [load_definition(source) for source in sources]

    assert all(d.to_json_dict() == SMALL for d in loaded)
    assert load_definition(loaded[0]) is loaded[0]


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"

    assert load_problems(missing) == [f"{missing}: no such file"]
    assert load_problems(str(missing)) == [f"{missing}: no such file"]


def test_load_reports_malformed_json_with_line_and_column(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "name": "wf",\n  "tasks": [,]\n}\n')

    assert load_problems(broken) == [
        f"{broken}: malformed JSON at line 3 column 13: Expecting value"
    ]
    assert load_problems('{"name": }') == [
        "definition: malformed JSON at line 1 column 10: Expecting value"
    ]


def test_load_reports_malformed_yaml_with_line_and_column(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: wf\ntasks: [a\nversion: 1\n")

    assert load_problems(broken) == [
        f"{broken}: malformed YAML at line 3 column 8: expected ',' or ']', but got ':'"
    ]


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[1, 2]", "an array"), ("- a\n- b\n", "an array"), ("42\n", "a number"), ("", "null")],
)
def test_load_refuses_a_non_object(text: str, kind: str) -> None:
    assert load_problems(text) == [f"definition: a definition is a JSON object, not {kind}"]


def test_load_reports_schema_problems_of_a_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMALL_YAML.replace("type: SIMPLE", "type: SIMPL"))

    assert load_problems(bad) == [
        "tasks[0].type: unknown task type 'SIMPL' (did you mean 'SIMPLE'?)"
    ]
