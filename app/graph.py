"""A workflow definition as a graph, rendered as Mermaid or Graphviz DOT.

Nodes are tasks (plus a start and an end marker), edges the order they run in: fork
branches lead from the fork to its join, SWITCH/DECISION cases are labelled edges, a
DO_WHILE body is a subgraph with a dashed edge back to its loop. The graph is built from
the definition model alone, so every operator renders whether or not Baton can run it
yet. A run's step statuses, when given, colour the nodes. Pure: no Celery, no Redis.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from app.dsl.model import WorkflowDef, WorkflowTask
from app.store.status import StepStatus

START: Final = "wf_start"
END: Final = "wf_end"

FORMATS: Final = ("mermaid", "dot")

STATUS_COLOURS: Final[Mapping[str, tuple[str, str]]] = {
    StepStatus.COMPLETED: ("#c8e6c9", "#2e7d32"),
    StepStatus.COMPLETED_WITH_ERRORS: ("#fff9c4", "#f9a825"),
    StepStatus.IN_PROGRESS: ("#bbdefb", "#1565c0"),
    StepStatus.SCHEDULED: ("#e1f5fe", "#0277bd"),
    StepStatus.FAILED: ("#ffcdd2", "#c62828"),
    StepStatus.FAILED_WITH_TERMINAL_ERROR: ("#ffcdd2", "#c62828"),
    StepStatus.TIMED_OUT: ("#ffe0b2", "#ef6c00"),
    StepStatus.CANCELED: ("#eeeeee", "#616161"),
    StepStatus.SKIPPED: ("#f5f5f5", "#9e9e9e"),
}
"""Fill and stroke colour of a node per step status (in the order legends list them)."""

_BRANCHING: Final = frozenset({"SWITCH", "DECISION"})
_PLAIN_ID = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Node:
    """One task of the definition, or the start or end marker."""

    id: str
    """An identifier safe in both Mermaid and DOT (`t_<ref>` where the ref allows it)."""
    ref: str | None
    """The task's reference name; None for the start and end markers."""
    type: str
    """The task's type; START or END for the markers."""
    detail: str
    """The label's second line: the transformation of a SIMPLE task, else the type."""
    cluster: str | None = None
    """The innermost loop subgraph the node belongs to."""

    @property
    def label(self) -> str:
        return self.detail if self.ref is None else f"{self.ref}\n{self.detail}"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str | None = None
    back: bool = False
    """A loop's way back to its DO_WHILE (drawn dashed)."""


@dataclass(frozen=True)
class Cluster:
    """A DO_WHILE and its body."""

    id: str
    label: str
    parent: str | None


@dataclass(frozen=True)
class Graph:
    name: str
    version: int
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    clusters: tuple[Cluster, ...]


# Where control leaves a task: the node, and the label of the edge that leaves it.
_Exit = tuple[str, str | None]


def build_graph(definition: WorkflowDef) -> Graph:
    """The definition's tasks as nodes and the order they run in as edges."""
    builder = _Builder()
    builder.nodes.append(Node(START, None, "START", "start"))
    exits = builder.sequence(definition.tasks, [(START, None)])
    builder.nodes.append(Node(END, None, "END", "end"))
    builder.connect(exits, END)
    return Graph(
        name=definition.name,
        version=definition.version,
        nodes=tuple(builder.nodes),
        edges=tuple(dict.fromkeys(builder.edges)),
        clusters=tuple(builder.clusters),
    )


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.clusters: list[Cluster] = []
        self._ids: set[str] = {START, END}
        self._cluster: str | None = None

    def sequence(self, tasks: Iterable[WorkflowTask], entry: list[_Exit]) -> list[_Exit]:
        exits = entry
        for task in tasks:
            exits = self.task(task, exits)
        return exits

    def task(self, task: WorkflowTask, entry: list[_Exit]) -> list[_Exit]:
        children = task.children()
        body = [tasks for path, tasks in children if path == "loopOver"]
        outer = self._cluster
        if body or task.type == "DO_WHILE":
            self._cluster = f"loop_{len(self.clusters) + 1}"
            self.clusters.append(Cluster(self._cluster, f"{task.task_reference_name} loop", outer))
        node = self.node(task)
        self.connect(entry, node)
        exits: list[_Exit] = []
        for path, tasks in children:
            if path.startswith("forkTasks["):
                exits += self.sequence(tasks, [(node, None)])
            elif path.startswith("decisionCases."):
                exits += self.sequence(tasks, [(node, path.removeprefix("decisionCases."))])
            elif path == "defaultCase":
                exits += self.sequence(tasks, [(node, "default")])
        # lists children() leaves out because they are empty still lead somewhere
        if any(not branch for branch in task.fork_tasks):
            exits.append((node, None))
        exits += [(node, case) for case, tasks in task.decision_cases.items() if not tasks]
        if task.type in _BRANCHING and not task.default_case:
            exits.append((node, "default"))
        if task.type == "FORK_JOIN_DYNAMIC":
            exits.append((node, "dynamic branches"))
        if body or task.type == "DO_WHILE":
            for tail, label in self.sequence(body[0] if body else [], [(node, None)]):
                if tail != node:
                    # an inner loop's "done" is implied; a case label is worth keeping
                    case = "" if label in (None, "done") else f"{label} / "
                    self.edges.append(Edge(tail, node, f"{case}repeat", back=True))
            self._cluster = outer
            exits.append((node, "done"))
        if task.type == "TERMINATE":
            self.edges.append(Edge(node, END))
            return []
        return list(dict.fromkeys(exits)) or [(node, None)]

    def node(self, task: WorkflowTask) -> str:
        ref = task.task_reference_name
        node_id = f"t_{ref}" if _PLAIN_ID.fullmatch(ref) else f"t{len(self.nodes)}"
        while node_id in self._ids:  # a duplicate ref (the validator reports it) or a clash
            node_id += "_"
        self._ids.add(node_id)
        self.nodes.append(Node(node_id, ref, task.type, _detail(task), self._cluster))
        return node_id

    def connect(self, exits: list[_Exit], target: str) -> None:
        self.edges += [Edge(source, target, label) for source, label in exits]


def _detail(task: WorkflowTask) -> str:
    if task.type == "SIMPLE":
        return task.name
    params = task.sub_workflow_param
    if task.type == "SUB_WORKFLOW" and params is not None and params.name:
        version = f" v{params.version}" if params.version is not None else ""
        return f"SUB_WORKFLOW {params.name}{version}"
    return task.type


# -- Mermaid ----------------------------------------------------------------------------------

_MERMAID_SHAPES: Final = {
    "START": ('(("', '"))'),
    "END": ('(("', '"))'),
    "SWITCH": ('{"', '"}'),
    "DECISION": ('{"', '"}'),
    "FORK_JOIN": ('{{"', '"}}'),
    "FORK_JOIN_DYNAMIC": ('{{"', '"}}'),
    "JOIN": ('{{"', '"}}'),
    "EXCLUSIVE_JOIN": ('{{"', '"}}'),
    "DO_WHILE": ('(["', '"])'),
    "SUB_WORKFLOW": ('[["', '"]]'),
    "START_WORKFLOW": ('[["', '"]]'),
    "TERMINATE": ('(["', '"])'),
}


def to_mermaid(graph: Graph, statuses: Mapping[str, str] | None = None) -> str:
    """A Mermaid flowchart; with statuses (step ref -> status), nodes coloured by class."""
    title = " ".join(f"{graph.name} v{graph.version}".splitlines())
    lines = ["flowchart TD", f"    %% {title}"]

    def node_line(node: Node) -> str:
        opening, closing = _MERMAID_SHAPES.get(node.type, ('["', '"]'))
        text = _mermaid_text(node.label).replace("\n", "<br/>")
        return f"{node.id}{opening}{text}{closing}"

    lines += _nested(graph, "    ", node_line, _mermaid_cluster, lambda: "end")
    for edge in graph.edges:
        arrow = "-.->" if edge.back else "-->"
        label = f'|"{_mermaid_text(edge.label)}"|' if edge.label else ""
        lines.append(f"    {edge.source} {arrow}{label} {edge.target}")
    coloured = _coloured(graph, statuses)
    for status in coloured:
        fill, stroke = STATUS_COLOURS[status]
        lines.append(f"    classDef {status.lower()} fill:{fill},stroke:{stroke}")
    for status, node_ids in coloured.items():
        lines.append(f"    class {','.join(node_ids)} {status.lower()}")
    return "\n".join(lines) + "\n"


def _mermaid_cluster(cluster: Cluster) -> str:
    return f'subgraph {cluster.id}["{_mermaid_text(cluster.label)}"]'


def _mermaid_text(text: str) -> str:
    # Mermaid reads labels as HTML with its own entity syntax for what would end them
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


# -- DOT --------------------------------------------------------------------------------------

_DOT_SHAPES: Final = {
    "START": "circle",
    "END": "doublecircle",
    "SWITCH": "diamond",
    "DECISION": "diamond",
    "FORK_JOIN": "hexagon",
    "FORK_JOIN_DYNAMIC": "hexagon",
    "JOIN": "hexagon",
    "EXCLUSIVE_JOIN": "hexagon",
    "DO_WHILE": "ellipse",
    "SUB_WORKFLOW": "component",
    "START_WORKFLOW": "component",
    "TERMINATE": "octagon",
}


def to_dot(graph: Graph, statuses: Mapping[str, str] | None = None) -> str:
    """A Graphviz digraph; with statuses (step ref -> status), nodes filled by status."""
    fills = {
        node_id: STATUS_COLOURS[status]
        for status, node_ids in _coloured(graph, statuses).items()
        for node_id in node_ids
    }
    lines = [
        f"digraph {_dot_text(f'{graph.name} v{graph.version}')} {{",
        '    graph [rankdir=TB, fontname="Helvetica"];',
        '    node [shape=box, style="rounded,filled", fillcolor="white", fontname="Helvetica"];',
        '    edge [fontname="Helvetica"];',
    ]

    def node_line(node: Node) -> str:
        attributes = [f"label={_dot_text(node.label)}"]
        if node.type in _DOT_SHAPES:
            attributes.append(f"shape={_DOT_SHAPES[node.type]}")
        if node.id in fills:
            fill, stroke = fills[node.id]
            attributes.append(f'fillcolor="{fill}", color="{stroke}"')
        return f"{node.id} [{', '.join(attributes)}];"

    def cluster_line(cluster: Cluster) -> str:
        return f"subgraph cluster_{cluster.id} {{ label={_dot_text(cluster.label)}; style=dashed;"

    lines += _nested(graph, "    ", node_line, cluster_line, lambda: "}")
    for edge in graph.edges:
        attributes = []
        if edge.label:
            attributes.append(f"label={_dot_text(edge.label)}")
        if edge.back:
            attributes.append("style=dashed")
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"    {edge.source} -> {edge.target}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


# -- shared -----------------------------------------------------------------------------------


def render(graph: Graph, format: str, statuses: Mapping[str, str] | None = None) -> str:
    """The graph in one of FORMATS."""
    if format == "mermaid":
        return to_mermaid(graph, statuses)
    if format == "dot":
        return to_dot(graph, statuses)
    raise ValueError(f"unknown graph format {format!r} (expected one of {', '.join(FORMATS)})")


def _nested(
    graph: Graph,
    indent: str,
    node_line: Callable[[Node], str],
    open_line: Callable[[Cluster], str],
    close_line: Callable[[], str],
) -> list[str]:
    """Node lines, each inside the subgraph blocks of its (nested) loops."""
    lines: list[str] = []

    def emit(cluster: str | None, depth: int) -> None:
        pad = indent * depth
        lines.extend(pad + node_line(n) for n in graph.nodes if n.cluster == cluster)
        for inner in graph.clusters:
            if inner.parent == cluster:
                lines.append(pad + open_line(inner))
                emit(inner.id, depth + 1)
                lines.append(pad + close_line())

    emit(None, 1)
    return lines


def _coloured(graph: Graph, statuses: Mapping[str, str] | None) -> dict[str, list[str]]:
    """Node ids per known status, statuses in STATUS_COLOURS order, nodes in graph order."""
    if not statuses:
        return {}
    found: dict[str, list[str]] = {}
    for status in STATUS_COLOURS:
        node_ids = [n.id for n in graph.nodes if n.ref and statuses.get(n.ref) == status]
        if node_ids:
            found[status] = node_ids
    return found
