"""A definition's graph (app.graph) laid out in layers and drawn as SVG for the workflow view.

A plain layered layout, enough for the shapes Conductor definitions take (sequences, forks
that join, switch cases, loops): each node's layer is its longest path from the start over
forward edges (a loop's way back is drawn, not ranked); nodes within a layer are ordered by
the mean position of their predecessors, a few sweeps down. Each node is an SVG group with
`data-ref`, so the page colours it by its step's status (class `st-<STATUS>`) and puts a
badge on it (loop iterations, dynamic branches) without drawing again.
Pure: no Redis, no web framework; the SVG is text built with escaping.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from html import escape
from typing import Final

from app.graph import Graph, Node

NODE_W: Final = 170
NODE_H: Final = 44
GAP_X: Final = 30
GAP_Y: Final = 46
MARGIN: Final = 24
MAX_NODES: Final = 600
"""A graph larger than this is not drawn (the page says so): the steps table still lists it."""
_SWEEPS: Final = 4
_LABEL_CHARS: Final = 24


@dataclass(frozen=True)
class Placed:
    node: Node
    x: float
    y: float


def layers(graph: Graph) -> list[list[Node]]:
    """The graph's nodes in layers from the start, each layer ordered to cross few edges."""
    forward = [e for e in graph.edges if not e.back]
    incoming: dict[str, list[str]] = defaultdict(list)
    outgoing: dict[str, list[str]] = defaultdict(list)
    for edge in forward:
        outgoing[edge.source].append(edge.target)
        incoming[edge.target].append(edge.source)
    # longest path over a topological order (Kahn); what a cycle leaves over goes last
    order = {node.id: i for i, node in enumerate(graph.nodes)}
    waiting = {node.id: len(incoming[node.id]) for node in graph.nodes}
    ready = [node.id for node in graph.nodes if waiting[node.id] == 0]
    rank: dict[str, int] = {}
    seen: list[str] = []
    while ready:
        current = ready.pop(0)
        seen.append(current)
        rank[current] = max((rank[p] + 1 for p in incoming[current] if p in rank), default=0)
        for target in outgoing[current]:
            waiting[target] -= 1
            if waiting[target] == 0:
                ready.append(target)
    deepest = max(rank.values(), default=0)
    for node in graph.nodes:
        if node.id not in rank:
            deepest += 1
            rank[node.id] = deepest
    by_id = {node.id: node for node in graph.nodes}
    found: list[list[Node]] = [[] for _ in range(max(rank.values(), default=0) + 1)]
    for node_id in sorted(rank, key=lambda n: order[n]):
        found[rank[node_id]].append(by_id[node_id])
    for _ in range(_SWEEPS):
        position = {n.id: i for layer in found for i, n in enumerate(layer)}
        for layer in found[1:]:
            layer.sort(key=lambda node: _mean_parent(node, incoming, position))
            position.update({n.id: i for i, n in enumerate(layer)})
    return [layer for layer in found if layer]


def _mean_parent(node: Node, incoming: dict[str, list[str]], position: dict[str, int]) -> float:
    parents = [position[p] for p in incoming[node.id] if p in position]
    return sum(parents) / len(parents) if parents else position[node.id]


def place(graph: Graph) -> tuple[list[Placed], float, float]:
    """Each node's top-left corner, and the drawing's width and height."""
    found = layers(graph)
    widest = max((len(layer) for layer in found), default=1)
    width = MARGIN * 2 + widest * NODE_W + (widest - 1) * GAP_X
    placed = []
    for depth, layer in enumerate(found):
        span = len(layer) * NODE_W + (len(layer) - 1) * GAP_X
        left = (width - span) / 2
        for i, node in enumerate(layer):
            top = MARGIN + depth * (NODE_H + GAP_Y)
            placed.append(Placed(node, left + i * (NODE_W + GAP_X), top))
    height = MARGIN * 2 + len(found) * NODE_H + max(len(found) - 1, 0) * GAP_Y
    return placed, width, height


def to_svg(graph: Graph) -> str:
    """The graph as an inline SVG element (no scripts, no outside references)."""
    if len(graph.nodes) > MAX_NODES:
        return (f'<p class="note">{len(graph.nodes)} tasks: too many to draw here '
                f"(at most {MAX_NODES}); the steps below list every one.</p>")
    placed, width, height = place(graph)
    at = {p.node.id: p for p in placed}
    parts = [f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
             f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
             f'aria-label="{escape(graph.name)} graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
             'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
             '<path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead"/></marker></defs>']
    for cluster in graph.clusters:
        inside = [p for p in placed if _within(p.node.cluster, cluster.id, graph)]
        if inside:
            left = min(p.x for p in inside) - 10
            top = min(p.y for p in inside) - 18
            right = max(p.x for p in inside) + NODE_W + 10
            bottom = max(p.y for p in inside) + NODE_H + 10
            parts.append(f'<rect class="cluster" x="{left:.0f}" y="{top:.0f}" '
                         f'width="{right - left:.0f}" height="{bottom - top:.0f}" rx="8"/>'
                         f'<text class="cluster-label" x="{left + 6:.0f}" y="{top + 12:.0f}">'
                         f"{escape(cluster.label)}</text>")
    for edge in graph.edges:
        source, target = at.get(edge.source), at.get(edge.target)
        if source is None or target is None:
            continue
        parts.append(_edge(source, target, edge.label, edge.back))
    for p in placed:
        parts.append(_node(p))
    parts.append("</svg>")
    return "".join(parts)


def _within(cluster: str | None, wanted: str, graph: Graph) -> bool:
    parents = {c.id: c.parent for c in graph.clusters}
    while cluster is not None:
        if cluster == wanted:
            return True
        cluster = parents.get(cluster)
    return False


def _edge(source: Placed, target: Placed, label: str | None, back: bool) -> str:
    if back:
        # a loop's way back: out of the right side of the body's end, into the loop's
        x1, y1 = source.x + NODE_W, source.y + NODE_H / 2
        x2, y2 = target.x + NODE_W, target.y + NODE_H / 2
        bend = max(x1, x2) + 40
        path = f"M {x1:.0f} {y1:.0f} C {bend:.0f} {y1:.0f}, {bend:.0f} {y2:.0f}, {x2:.0f} {y2:.0f}"
        middle = (bend - 10, (y1 + y2) / 2)
    else:
        x1, y1 = source.x + NODE_W / 2, source.y + NODE_H
        x2, y2 = target.x + NODE_W / 2, target.y
        bend = (y2 - y1) / 2
        path = (f"M {x1:.0f} {y1:.0f} C {x1:.0f} {y1 + bend:.0f}, {x2:.0f} {y2 - bend:.0f}, "
                f"{x2:.0f} {y2:.0f}")
        middle = ((x1 + x2) / 2, (y1 + y2) / 2)
    kind = "edge back" if back else "edge"
    drawn = f'<path class="{kind}" d="{path}" marker-end="url(#arrow)"/>'
    if label:
        drawn += (f'<text class="edge-label" x="{middle[0]:.0f}" y="{middle[1]:.0f}">'
                  f"{escape(_short(label))}</text>")
    return drawn


def _node(p: Placed) -> str:
    node = p.node
    ref = node.ref or ""
    title = escape(node.label.replace("\n", " · "))
    shape = "marker" if node.ref is None else f"task type-{escape(node.type)}"
    rx = NODE_H / 2 if node.ref is None else 6
    first = node.ref if node.ref is not None else node.detail
    second = node.detail if node.ref is not None else ""
    return (
        f'<g class="node {shape}" data-ref="{escape(ref)}" data-node="{escape(node.id)}" '
        f'transform="translate({p.x:.0f},{p.y:.0f})"><title>{title}</title>'
        f'<rect width="{NODE_W}" height="{NODE_H}" rx="{rx:.0f}"/>'
        f'<text class="ref" x="{NODE_W / 2:.0f}" y="{18 if second else 27}">'
        f"{escape(_short(first))}</text>"
        + (f'<text class="detail" x="{NODE_W / 2:.0f}" y="34">{escape(_short(second))}</text>'
           if second else "")
        + f'<text class="badge" x="{NODE_W - 6}" y="12"></text></g>'
    )


def _short(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"
