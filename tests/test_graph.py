"""Definitions drawn as graphs: pure functions, no Redis and no worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.dsl.load import load_definition
from app.graph import Graph, build_graph, render, to_dot, to_mermaid

SEED = Path(__file__).resolve().parents[1] / "workflows" / "encode_and_deploy.json"


def task(ref: str, type: str = "SIMPLE", name: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name or ref, "taskReferenceName": ref, "type": type, **extra}


def graph_of(*tasks: dict[str, Any]) -> Graph:
    return build_graph(load_definition(
        {"name": "g", "version": 1, "schemaVersion": 2, "tasks": list(tasks)}
    ))


def edges(graph: Graph) -> list[tuple[str, str, str | None]]:
    return [(e.source, e.target, e.label) for e in graph.edges]


def test_seed_workflow_as_mermaid() -> None:
    assert to_mermaid(build_graph(load_definition(SEED))) == (
        "flowchart TD\n"
        "    %% encode_and_deploy v1\n"
        '    wf_start(("start"))\n'
        '    t_encode["encode<br/>encode"]\n'
        '    t_d1["d1<br/>deploy"]\n'
        '    wf_end(("end"))\n'
        "    wf_start --> t_encode\n"
        "    t_encode --> t_d1\n"
        "    t_d1 --> wf_end\n"
    )


def test_seed_workflow_as_dot() -> None:
    assert to_dot(build_graph(load_definition(SEED))) == (
        'digraph "encode_and_deploy v1" {\n'
        '    graph [rankdir=TB, fontname="Helvetica"];\n'
        '    node [shape=box, style="rounded,filled", fillcolor="white", fontname="Helvetica"];\n'
        '    edge [fontname="Helvetica"];\n'
        '    wf_start [label="start", shape=circle];\n'
        '    t_encode [label="encode\\nencode"];\n'
        '    t_d1 [label="d1\\ndeploy"];\n'
        '    wf_end [label="end", shape=doublecircle];\n'
        "    wf_start -> t_encode;\n"
        "    t_encode -> t_d1;\n"
        "    t_d1 -> wf_end;\n"
        "}\n"
    )


def test_fork_branches_lead_from_the_fork_to_its_join() -> None:
    graph = graph_of(
        task("fan", "FORK_JOIN", forkTasks=[[task("a1"), task("a2")], [task("b1")]]),
        task("fan_join", "JOIN", joinOn=["a2", "b1"]),
        task("last"),
    )

    assert edges(graph) == [
        ("wf_start", "t_fan", None),
        ("t_fan", "t_a1", None),
        ("t_a1", "t_a2", None),
        ("t_fan", "t_b1", None),
        ("t_a2", "t_fan_join", None),
        ("t_b1", "t_fan_join", None),
        ("t_fan_join", "t_last", None),
        ("t_last", "wf_end", None),
    ]
    assert "t_fan{{\"fan<br/>FORK_JOIN\"}}" in to_mermaid(graph)


def test_switch_cases_are_labelled_edges_and_a_missing_default_goes_straight_on() -> None:
    graph = graph_of(
        task("route", "SWITCH", evaluatorType="value-param", expression="kind",
             decisionCases={"video": [task("encode")], "none": []}),
        task("after"),
    )

    assert edges(graph) == [
        ("wf_start", "t_route", None),
        ("t_route", "t_encode", "video"),
        ("t_encode", "t_after", None),
        ("t_route", "t_after", "none"),
        ("t_route", "t_after", "default"),
        ("t_after", "wf_end", None),
    ]
    mermaid = to_mermaid(graph)
    assert '    t_route{"route<br/>SWITCH"}\n' in mermaid
    assert '    t_route -->|"video"| t_encode\n' in mermaid
    assert '    t_route -> t_after [label="default"];\n' in to_dot(graph)


def test_a_default_case_is_its_own_labelled_branch() -> None:
    graph = graph_of(
        task("route", "SWITCH", evaluatorType="value-param", expression="kind",
             decisionCases={"a": [task("x")]}, defaultCase=[task("y")]),
    )
    assert ("t_route", "t_y", "default") in edges(graph)
    assert ("t_y", "wf_end", None) in edges(graph)
    assert ("t_route", "wf_end", "default") not in edges(graph)


def test_a_loop_is_a_subgraph_with_a_dashed_way_back() -> None:
    graph = graph_of(
        task("loop", "DO_WHILE", loopCondition="false",
             loopOver=[task("body"), task("inner", "DO_WHILE", loopOver=[task("deep")])]),
        task("after"),
    )

    assert [(c.id, c.label, c.parent) for c in graph.clusters] == [
        ("loop_1", "loop loop", None), ("loop_2", "inner loop", "loop_1"),
    ]
    assert {n.ref: n.cluster for n in graph.nodes if n.ref} == {
        "loop": "loop_1", "body": "loop_1", "inner": "loop_2", "deep": "loop_2", "after": None,
    }
    assert [(e.source, e.target, e.label) for e in graph.edges if e.back] == [
        ("t_deep", "t_inner", "repeat"), ("t_inner", "t_loop", "repeat"),
    ]
    assert ("t_loop", "t_after", "done") in edges(graph)
    mermaid = to_mermaid(graph)
    assert (
        '    subgraph loop_1["loop loop"]\n'
        '        t_loop(["loop<br/>DO_WHILE"])\n'
        '        t_body["body<br/>body"]\n'
        '        subgraph loop_2["inner loop"]\n'
        '            t_inner(["inner<br/>DO_WHILE"])\n'
        '            t_deep["deep<br/>deep"]\n'
        "        end\n"
        "    end\n"
    ) in mermaid
    assert '    t_deep -.->|"repeat"| t_inner\n' in mermaid
    dot = to_dot(graph)
    assert '    subgraph cluster_loop_1 { label="loop loop"; style=dashed;\n' in dot
    assert '    t_deep -> t_inner [label="repeat", style=dashed];\n' in dot


def test_terminate_leads_to_the_end_and_nothing_follows_it() -> None:
    graph = graph_of(
        task("route", "SWITCH", evaluatorType="value-param", expression="k",
             decisionCases={"stop": [task("halt", "TERMINATE")]}, defaultCase=[task("go")]),
        task("after"),
    )
    assert ("t_halt", "wf_end", None) in edges(graph)
    assert [e for e in edges(graph) if e[0] == "t_halt"] == [("t_halt", "wf_end", None)]
    assert ("t_go", "t_after", None) in edges(graph)


def test_operators_baton_does_not_run_yet_still_render() -> None:
    graph = graph_of(
        task("child", "SUB_WORKFLOW", subWorkflowParam={"name": "resize", "version": 2}),
        task("dyn", "FORK_JOIN_DYNAMIC", dynamicForkTasksParam="tasks",
             dynamicForkTasksInputParamName="inputs"),
        task("dyn_join", "JOIN"),
        task("wait", "WAIT"),
    )
    assert [n.label for n in graph.nodes] == [
        "start", "child\nSUB_WORKFLOW resize v2", "dyn\nFORK_JOIN_DYNAMIC", "dyn_join\nJOIN",
        "wait\nWAIT", "end",
    ]
    assert ("t_dyn", "t_dyn_join", "dynamic branches") in edges(graph)
    assert '    t_child[["child<br/>SUB_WORKFLOW resize v2"]]\n' in to_mermaid(graph)


def test_statuses_colour_nodes_in_both_formats() -> None:
    graph = build_graph(load_definition(SEED))
    statuses = {"encode": "COMPLETED", "d1": "FAILED", "unknown_ref": "COMPLETED"}

    mermaid = to_mermaid(graph, statuses)
    assert mermaid.endswith(
        "    classDef completed fill:#c8e6c9,stroke:#2e7d32\n"
        "    classDef failed fill:#ffcdd2,stroke:#c62828\n"
        "    class t_encode completed\n"
        "    class t_d1 failed\n"
    )
    dot = to_dot(graph, statuses)
    assert '    t_encode [label="encode\\nencode", fillcolor="#c8e6c9", color="#2e7d32"];\n' in dot
    assert '    t_d1 [label="d1\\ndeploy", fillcolor="#ffcdd2", color="#c62828"];\n' in dot
    assert "classDef" not in to_mermaid(graph, {})


def test_refs_and_names_that_need_escaping_get_safe_ids_and_quoted_labels() -> None:
    graph = graph_of(task("fetch-1", name='say "hi" <b>'), task("fetch_1"))

    assert [n.id for n in graph.nodes] == ["wf_start", "t1", "t_fetch_1", "wf_end"]
    assert '    t1["fetch-1<br/>say #quot;hi#quot; #lt;b#gt;"]\n' in to_mermaid(graph)
    assert '    t1 [label="fetch-1\\nsay \\"hi\\" <b>"];\n' in to_dot(graph)


def test_render_picks_the_format_by_name() -> None:
    graph = build_graph(load_definition(SEED))
    assert render(graph, "dot") == to_dot(graph)
    assert render(graph, "mermaid", {"d1": "COMPLETED"}) == to_mermaid(graph, {"d1": "COMPLETED"})
    with pytest.raises(ValueError, match="unknown graph format 'png'"):
        render(graph, "png")
