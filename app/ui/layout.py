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
MARGIN: Final = 48  # room on the left for loops' ways back
EDGE_SLOT_W: Final = 16
"""The width an edge takes where it passes a layer without a node of its own."""
MAX_NODES: Final = 600
"""A graph larger than this is not drawn (the page says so): the steps table still lists it."""
_SWEEPS: Final = 4
_LABEL_CHARS: Final = 24


@dataclass(frozen=True)
class Slot:
    """A place in a layer: a node, or a point a long edge passes through (node None)."""

    id: str
    node: Node | None

    @property
    def width(self) -> float:
        return NODE_W if self.node is not None else EDGE_SLOT_W


@dataclass(frozen=True)
class Placed:
    slot: Slot
    x: float
    y: float

    @property
    def node(self) -> Node:
        assert self.slot.node is not None
        return self.slot.node

    @property
    def centre(self) -> float:
        return self.x + self.slot.width / 2


@dataclass(frozen=True)
class Layout:
    placed: dict[str, Placed]
    """Every slot by id: nodes by their node id, edge points by `~<n>`."""
    routes: list[list[str]]
    """Each forward edge of the graph (in order, back edges left out) as the slots it
    passes: source, edge points, target."""
    width: float
    height: float


def _ranks(graph: Graph) -> dict[str, int]:
    """Each node's layer: its longest path from the start over forward edges. A loop's
    `done` edge also ranks below the loop's body, so what follows a loop comes after it."""
    pairs = [(e.source, e.target) for e in graph.edges if not e.back]
    for back in (e for e in graph.edges if e.back):
        pairs += [(back.source, e.target) for e in graph.edges
                  if e.source == back.target and e.label == "done" and not e.back]
    incoming: dict[str, list[str]] = defaultdict(list)
    outgoing: dict[str, list[str]] = defaultdict(list)
    for source, target in dict.fromkeys(pairs):
        outgoing[source].append(target)
        incoming[target].append(source)
    # longest path over a topological order (Kahn); what a cycle leaves over goes last
    waiting = {node.id: len(incoming[node.id]) for node in graph.nodes}
    ready = [node.id for node in graph.nodes if waiting[node.id] == 0]
    rank: dict[str, int] = {}
    while ready:
        current = ready.pop(0)
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
    return rank


def layers(graph: Graph) -> tuple[list[list[Slot]], list[list[str]]]:
    """The slots in layers from the start, each layer ordered to cross few edges, and each
    forward edge's route through them (an edge spanning layers gets a point in each)."""
    rank = _ranks(graph)
    found: list[list[Slot]] = [[] for _ in range(max(rank.values(), default=0) + 1)]
    for node in graph.nodes:
        found[rank[node.id]].append(Slot(node.id, node))
    routes: list[list[str]] = []
    incoming: dict[str, list[str]] = defaultdict(list)
    for edge in (e for e in graph.edges if not e.back):
        route = [edge.source]
        for depth in range(rank[edge.source] + 1, rank[edge.target]):
            point = f"~{sum(len(layer) for layer in found)}"
            found[depth].append(Slot(point, None))
            route.append(point)
        route.append(edge.target)
        routes.append(route)
        for before, after in zip(route, route[1:], strict=False):
            incoming[after].append(before)
    for _ in range(_SWEEPS):
        position = {slot.id: float(i) for layer in found for i, slot in enumerate(layer)}
        for layer in found[1:]:
            layer.sort(key=lambda slot: _mean_parent(slot.id, incoming, position))
            position.update({slot.id: float(i) for i, slot in enumerate(layer)})
    return [layer for layer in found if layer], routes


def _mean_parent(slot: str, incoming: dict[str, list[str]], position: dict[str, float]) -> float:
    parents = [position[p] for p in incoming[slot] if p in position]
    return sum(parents) / len(parents) if parents else position[slot]


def place(graph: Graph) -> Layout:
    """Each slot's top-left corner, the edges' routes, and the drawing's size."""
    found, routes = layers(graph)

    def span(layer: list[Slot]) -> float:
        return sum(slot.width for slot in layer) + (len(layer) - 1) * GAP_X

    width = MARGIN * 2 + max((span(layer) for layer in found), default=NODE_W)
    placed: dict[str, Placed] = {}
    for depth, layer in enumerate(found):
        left = (width - span(layer)) / 2
        top = MARGIN + depth * (NODE_H + GAP_Y)
        for slot in layer:
            placed[slot.id] = Placed(slot, left, top)
            left += slot.width + GAP_X
    height = MARGIN * 2 + len(found) * NODE_H + max(len(found) - 1, 0) * GAP_Y
    return Layout(placed, routes, width, height)


def to_svg(graph: Graph) -> str:
    """The graph as an inline SVG element (no scripts, no outside references)."""
    if len(graph.nodes) > MAX_NODES:
        return (f'<p class="note">{len(graph.nodes)} tasks: too many to draw here '
                f"(at most {MAX_NODES}); the steps below list every one.</p>")
    layout = place(graph)
    width, height = layout.width, layout.height
    placed = [p for p in layout.placed.values() if p.slot.node is not None]
    at = layout.placed
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
    forward = iter(layout.routes)
    for edge in graph.edges:
        if edge.back:
            parts.append(_back_edge(at[edge.source], at[edge.target], edge.label))
        else:
            parts.append(_edge([at[slot] for slot in next(forward)], edge.label))
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


def _edge(route: list[Placed], label: str | None) -> str:
    """Down from the source through each edge point to the target, curved between layers."""
    source, target = route[0], route[-1]
    points = [(source.centre, source.y + NODE_H)]
    for point in route[1:-1]:
        points += [(point.centre, point.y), (point.centre, point.y + NODE_H)]
    points.append((target.centre, target.y))
    path = f"M {points[0][0]:.0f} {points[0][1]:.0f}"
    for i in range(1, len(points)):
        (x1, y1), (x2, y2) = points[i - 1], points[i]
        if i % 2:  # between layers
            bend = (y2 - y1) / 2
            path += f" C {x1:.0f} {y1 + bend:.0f}, {x2:.0f} {y2 - bend:.0f}, {x2:.0f} {y2:.0f}"
        else:  # through a layer, beside its nodes
            path += f" L {x2:.0f} {y2:.0f}"
    drawn = f'<path class="edge" d="{path}" marker-end="url(#arrow)"/>'
    if label:
        (x1, y1), (x2, y2) = points[0], points[1]
        drawn += (f'<text class="edge-label" x="{(x1 + x2) / 2:.0f}" y="{(y1 + y2) / 2:.0f}">'
                  f"{escape(_short(label))}</text>")
    return drawn


def _back_edge(source: Placed, target: Placed, label: str | None) -> str:
    """A loop's way back: out of the left of the body's end, round into the loop's left."""
    x1, y1 = source.x, source.y + NODE_H / 2
    x2, y2 = target.x, target.y + NODE_H / 2
    bend = min(x1, x2) - 36
    path = f"M {x1:.0f} {y1:.0f} C {bend:.0f} {y1:.0f}, {bend:.0f} {y2:.0f}, {x2:.0f} {y2:.0f}"
    drawn = f'<path class="edge back" d="{path}" marker-end="url(#arrow)"/>'
    if label:
        drawn += (f'<text class="edge-label" x="{bend + 8:.0f}" y="{(y1 + y2) / 2:.0f}">'
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
