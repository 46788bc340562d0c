"""Turning samples into figures: medians per shape and side, the ratio, the printed tables.

Pure: no processes, no Redis. Every figure is a median over rounds; throughput and time
per step are derived from the median wall time, so they agree with each other.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from bench.measure import Sample

if TYPE_CHECKING:
    from bench.shapes import Shape

TARGET = 1.0
"""Baton aims at this fraction of raw Celery's throughput or better."""


@dataclass
class Series:
    """Every round's sample of one shape on one side, and lone-run latencies if taken."""

    samples: list[Sample] = field(default_factory=list)
    alone_ms: list[float] = field(default_factory=list)


def _median_per_step(
    samples: Sequence[Sample], steps: int, value: Callable[[Sample], float | None]
) -> float | None:
    values = [value(s) for s in samples]
    if any(v is None for v in values):
        return None
    return statistics.median(float(v) / steps for v in values if v is not None)


def summarise(shape: Shape, series: Series) -> dict[str, Any]:
    samples, steps = series.samples, shape.steps
    wall = statistics.median(s.wall_s for s in samples)
    figures: dict[str, Any] = {
        "steps": steps,
        "wall_s": wall,
        "samples": len(samples),
        "submit_s": statistics.median(s.submit_s for s in samples),
        "steps_per_s": steps / wall,
        "ms_per_step": wall * 1000 / steps,
    }
    if shape.runs > 1:
        figures["runs_per_s"] = shape.runs / wall
        figures["e2e_p50_ms"] = statistics.median(
            statistics.median(s.latencies_ms) for s in samples
        )
    if series.alone_ms:
        figures["alone_p50_ms"] = statistics.median(series.alone_ms)
    figures |= _costs(samples, steps)
    sizes = [s.largest_message_bytes for s in samples if s.largest_message_bytes is not None]
    figures["largest_message_bytes"] = max(sizes) if sizes else None  # the largest, not a median
    figures["rounds"] = [_round(s) for s in samples]
    return figures


def _costs(samples: Sequence[Sample], steps: int) -> dict[str, float | None]:
    per_step_ms = {
        "client_cpu_ms_per_step": lambda s: s.client_cpu_s * 1000,
        "worker_cpu_ms_per_step": lambda s: None if s.worker_cpu_s is None
        else s.worker_cpu_s * 1000,
        "redis_cpu_ms_per_step": lambda s: s.redis_cpu_s * 1000,
        "redis_commands_per_step": lambda s: s.redis_commands,
        "redis_in_bytes_per_step": lambda s: s.redis_in_bytes,
    }
    costs = {name: _median_per_step(samples, steps, pick) for name, pick in per_step_ms.items()}
    parts = [costs[f"{who}_cpu_ms_per_step"] for who in ("client", "worker", "redis")]
    costs["cpu_ms_per_step"] = None if None in parts else sum(p for p in parts if p is not None)
    return costs


def _round(sample: Sample) -> dict[str, Any]:
    figures = asdict(sample)
    del figures["latencies_ms"]  # hundreds of numbers per round; their median is kept
    figures["e2e_p50_ms"] = statistics.median(sample.latencies_ms)
    return figures


LIMITED = "baton_limit"
"""The side whose steps run under a limit never reached (bench.run --limited)."""


def figures_of(shapes: Sequence[Shape], results: dict[str, dict[str, Series]]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for shape in shapes:
        sides = {name: summarise(shape, series) for name, series in results[shape.key].items()}
        for name in shape.canvases:
            sides[name]["tasks_per_run"] = shape.canvases[name].tasks_per_run
        ratios = {name: _ratios(sides["baton"], sides[name]) for name in shape.canvases}
        report[shape.key] = {"title": shape.title, "sides": list(sides), **sides,
                             "ratio": ratios["raw"]["throughput"],
                             "cpu_ratio": ratios["raw"]["cpu"], "ratios": ratios}
        if LIMITED in sides:  # what a limit never reached costs: limited over unlimited
            report[shape.key]["limit_cost"] = _paired(results[shape.key][LIMITED].samples,
                                                      results[shape.key]["baton"].samples)
    return report


def _paired(side: Sequence[Sample], baton: Sequence[Sample]) -> dict[str, float | None]:
    """`side`'s throughput over Baton's and Baton's CPU over `side`'s, as `_ratios` gives
    them, but the median of each round's ratio: the two sides of one round ran back to
    back, so the drift of a noisy machine between rounds cancels out."""
    def cpu(sample: Sample) -> float | None:
        if sample.worker_cpu_s is None:
            return None
        return sample.client_cpu_s + sample.worker_cpu_s + sample.redis_cpu_s

    pairs = list(zip(side, baton, strict=True))
    throughput = statistics.median(b.wall_s / s.wall_s for s, b in pairs)
    cpus = [(cpu(s), cpu(b)) for s, b in pairs]
    known = [(s, b) for s, b in cpus if s and b]
    ratio = statistics.median(b / s for s, b in known) if len(known) == len(cpus) else None
    return {"throughput": throughput, "cpu": ratio}


def _ratios(baton: dict[str, Any], raw: dict[str, Any]) -> dict[str, float | None]:
    """Baton's throughput over raw's, and raw's CPU per step over Baton's."""
    baton_cpu, raw_cpu = baton["cpu_ms_per_step"], raw["cpu_ms_per_step"]
    # steadier than wall time on a shared machine, where throughput is bound by CPU
    cpu = raw_cpu / baton_cpu if baton_cpu and raw_cpu else None
    return {"throughput": baton["steps_per_s"] / raw["steps_per_s"], "cpu": cpu}


Column = tuple[str, str, str]  # heading, figure name, format

SPEED: tuple[Column, ...] = (
    ("steps", "steps", "{:d}"), ("tasks/run", "tasks_per_run", "{:d}"),
    ("wall s", "wall_s", "{:.3f}"),
    ("submit s", "submit_s", "{:.3f}"), ("steps/s", "steps_per_s", "{:.1f}"),
    ("runs/s", "runs_per_s", "{:.1f}"), ("ms/step", "ms_per_step", "{:.2f}"),
    ("e2e p50 ms", "e2e_p50_ms", "{:.1f}"), ("alone p50 ms", "alone_p50_ms", "{:.1f}"),
)
COST: tuple[Column, ...] = (
    ("cpu ms/step", "cpu_ms_per_step", "{:.2f}"),
    ("client", "client_cpu_ms_per_step", "{:.2f}"),
    ("worker", "worker_cpu_ms_per_step", "{:.2f}"),
    ("redis", "redis_cpu_ms_per_step", "{:.2f}"),
    ("redis cmds/step", "redis_commands_per_step", "{:.1f}"),
    ("redis in B/step", "redis_in_bytes_per_step", "{:.0f}"),
    ("largest msg B", "largest_message_bytes", "{:,d}"),
)


def throughput_note(entry: dict[str, Any]) -> str | None:
    parts = []
    for name, ratios in entry["ratios"].items():
        verdict = "ok" if ratios["throughput"] >= TARGET else "BELOW TARGET"
        parts.append(f"baton/{name} throughput {ratios['throughput']:.2f}x ({verdict})")
    return "; ".join(parts) + f" (target >= {TARGET:.1f}x)"


def cpu_note(entry: dict[str, Any]) -> str | None:
    parts = [f"{name}/baton CPU per step {ratios['cpu']:.2f}x"
             for name, ratios in entry["ratios"].items() if ratios["cpu"] is not None]
    if cost := entry.get("limit_cost"):
        parts.append(f"an unreached limit: throughput {cost['throughput'] - 1:+.1%}"
                     + (f", CPU per step {1 / cost['cpu'] - 1:+.1%}" if cost["cpu"] else ""))
    return "; ".join(parts) or None


def table(
    shapes: dict[str, Any],
    columns: Sequence[Column],
    note: Callable[[dict[str, Any]], str | None],
) -> str:
    rows = [["shape", "side", *(heading for heading, _, _ in columns)]]
    notes: dict[int, str] = {}
    for key, entry in shapes.items():
        for number, side in enumerate(entry["sides"]):
            label = f"({key}) {entry['title']}" if number == 0 else ""
            rows.append([label, side, *(_cell(entry[side], c) for c in columns)])
        text = note(entry)
        if text is not None:
            notes[len(rows)] = text
    return _render(rows, notes)


def _cell(figures: dict[str, Any], column: Column) -> str:
    _, name, fmt = column
    value = figures.get(name)
    return "-" if value is None else fmt.format(value)


def _render(rows: list[list[str]], notes: dict[int, str]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        if index in notes:  # a note goes under the rows of its shape
            lines.append(" " * (widths[0] + 2) + notes[index])
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    if len(rows) in notes:
        lines.append(" " * (widths[0] + 2) + notes[len(rows)])
    return "\n".join(lines)


def printed(figures: dict[str, Any]) -> str:
    env, options, shapes = figures["environment"], figures["options"], figures["shapes"]
    sizes = figures["first_message_bytes"]
    repeats = "".join(f", ({key}) x{count} per round" for key, count in options["repeats"].items())
    return "\n".join([
        f"Baton vs raw Celery canvas: medians of {options['rounds']} round(s){repeats}; "
        f"one worker ({env['worker']}), Redis {env['redis_server']}, Celery {env['celery']}, "
        f"{env['cpus']} CPUs",
        "",
        table(shapes, SPEED, throughput_note),
        "",
        "Cost per step (CPU ms spent by the client, the worker's processes and Redis):",
        "",
        table(shapes, COST, cpu_note),
        "",
        f"First broker message of the {sizes['shape']}: baton {sizes['baton']:,} B, "
        f"raw {sizes['raw']:,} B",
    ])
