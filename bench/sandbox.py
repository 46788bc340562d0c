"""What the script sandboxes cost per evaluation of a trivial program: jq in-process (as
JSON_JQ_TRANSFORM ran it before, compiled once and cached) against jq in its evaluator
process, and JavaScript with its result converted outside the engine (as before) against
inside it, in the same evaluation.

`python -m bench.sandbox [--samples N] [--batch N]`. Each sample times `--batch`
evaluations in a row and takes their mean; the table shows the median sample per case
and its ratio to the case it replaces. The evaluator is started and warmed before timing,
so the figures are the steady-state cost (pipe round trip, JSON text both ways), not the
start of a process. No Redis and no worker are needed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import jq
import quickjs

from app.runtime import javascript, jq_sandbox

PROGRAM = ".a + 1"
EXPRESSION = "$.a + 1"
VALUE: dict[str, Any] = {"a": 1, "b": "two"}
EXPECTED = 2


def jq_in_process() -> Any:
    return jq.compile(PROGRAM).input_value(VALUE).all()[0]


def jq_in_process_cached(compiled: Any = jq.compile(PROGRAM)) -> Any:  # noqa: B008 - once
    return compiled.input_value(VALUE).all()[0]


def jq_sandboxed() -> Any:
    return jq_sandbox.evaluate(PROGRAM, VALUE)[0]


def javascript_converted_outside() -> Any:
    """The former evaluation: the result was turned into JSON after the limits ended."""
    context = quickjs.Context()
    context.set_memory_limit(32 * 1024 * 1024)
    context.set_time_limit(2.0)
    context.eval(javascript._PRELUDE)
    context.eval("var $ = " + json.dumps(VALUE) + ";")
    result = context.eval(EXPRESSION)
    return json.loads(result.json()) if isinstance(result, quickjs.Object) else result


def javascript_sandboxed() -> Any:
    return javascript.evaluate(EXPRESSION, VALUE)


CASES: dict[str, Callable[[], Any]] = {
    "jq in-process, compiled each time": jq_in_process,
    "jq in-process, compiled once": jq_in_process_cached,
    "jq in the evaluator process": jq_sandboxed,
    "javascript, converted outside": javascript_converted_outside,
    "javascript, converted inside": javascript_sandboxed,
}
BASELINES = {
    "jq in the evaluator process": "jq in-process, compiled once",
    "javascript, converted inside": "javascript, converted outside",
}


def sample(case: Callable[[], Any], batch: int) -> float:
    started = time.perf_counter()
    for _ in range(batch):
        case()
    return (time.perf_counter() - started) / batch


def measure(samples: int, batch: int) -> dict[str, float]:
    for name, case in CASES.items():  # warm up: the evaluator starts, caches fill
        if case() != EXPECTED:
            raise SystemExit(f"{name} gave {case()!r}, not {EXPECTED}")
    series: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(samples):  # interleaved, so a busy moment of the machine hits every case
        for name, case in CASES.items():
            series[name].append(sample(case, batch))
    return {name: statistics.median(values) for name, values in series.items()}


def printed(medians: dict[str, float]) -> str:
    width = max(len(name) for name in medians)
    lines = [f"{'case':<{width}}  {'median per evaluation':>21}  ratio to the former"]
    for name, seconds in medians.items():
        former = BASELINES.get(name)
        ratio = f"{seconds / medians[former]:.1f}x" if former else ""
        lines.append(f"{name:<{width}}  {seconds * 1e6:>18.1f} us  {ratio}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox", description=__doc__)
    parser.add_argument("--samples", type=int, default=15, help="samples per case (15)")
    parser.add_argument("--batch", type=int, default=200, help="evaluations per sample (200)")
    options = parser.parse_args(argv)
    print(printed(measure(options.samples, options.batch)))


if __name__ == "__main__":
    main()
