"""The workflow view's pure parts: the graph's layout and SVG, and the live stream's diff."""

from __future__ import annotations

from typing import Any

from app.dsl.validate import parse_definition
from app.graph import build_graph
from app.ui.layout import NODE_H, NODE_W, place, to_svg
from app.ui.views import changes


def t(ref: str) -> dict[str, Any]:
    return {"name": "echo", "taskReferenceName": ref, "inputParameters": {}}


def definition() -> Any:
    return parse_definition({
        "name": "shapes", "version": 1, "schemaVersion": 2, "tasks": [
            t("first"),
            {"name": "fork", "taskReferenceName": "fork", "type": "FORK_JOIN",
             "forkTasks": [[t("a1"), t("a2")], [t("b1")]]},
            {"name": "join", "taskReferenceName": "join", "type": "JOIN",
             "joinOn": ["a2", "b1"]},
            {"name": "loop", "taskReferenceName": "loop", "type": "DO_WHILE",
             "loopCondition": "$.loop['iteration'] < 2", "inputParameters": {},
             "loopOver": [t("body")]},
            t("last")]})


def test_every_node_has_a_place_of_its_own_and_edges_run_downwards() -> None:
    graph = build_graph(definition())
    layout = place(graph)
    nodes = [p for p in layout.placed.values() if p.slot.node is not None]
    assert {p.node.id for p in nodes} == {n.id for n in graph.nodes}
    for i, one in enumerate(nodes):
        for other in nodes[i + 1:]:
            apart = (abs(one.x - other.x) >= NODE_W or abs(one.y - other.y) >= NODE_H)
            assert apart, (one.node.id, other.node.id)
    y = {p.slot.id: p.y for p in layout.placed.values()}
    for route in layout.routes:
        assert all(y[a] < y[b] for a, b in zip(route, route[1:], strict=False)), route
    # what follows the loop is drawn below its body
    assert y["t_last"] > y["t_body"]
    # the short branch's edge to the join passes the long branch's second layer beside it
    assert any(len(route) > 2 for route in layout.routes)


def test_the_svg_marks_each_task_by_ref_and_escapes_labels() -> None:
    svg = to_svg(build_graph(parse_definition({
        "name": "x<y", "version": 1, "schemaVersion": 2,
        "tasks": [t("a"), {"name": "wait", "taskReferenceName": "w<b>", "type": "WAIT"}]})))
    assert svg.startswith('<svg class="graph"')
    assert 'data-ref="a"' in svg and 'data-ref="w&lt;b&gt;"' in svg
    assert "<b>" not in svg and "<script" not in svg


def test_changes_carry_only_what_differs() -> None:
    before = {"run": {"status": "RUNNING"}, "steps": {"a": {"status": "IN_PROGRESS"},
                                                       "gone": {"status": "FAILED"}}}
    after = {"run": {"status": "RUNNING"}, "steps": {"a": {"status": "COMPLETED"},
                                                      "b": {"status": "SCHEDULED"}}}
    assert changes(before, after) == {"steps": {"a": {"status": "COMPLETED"},
                                                "b": {"status": "SCHEDULED"}, "gone": None}}
    assert changes(after, after) == {}
    assert changes(after, {**after, "run": {"status": "PAUSED"}}) == {
        "run": {"status": "PAUSED"}}
