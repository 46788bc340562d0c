"""Run the benchmark: Baton against raw Celery canvas, same shapes, one Redis, one worker.

`python -m bench.run [--rounds N] [--quick] [--json PATH]`. Starts a private
redis-server and one prefork worker that both sides share, warms both up, then measures
every shape `--rounds` times, alternating which side goes first, and prints medians.
`app` is imported only after REDIS_URL and BATON_TRANSFORMATIONS are set, because the
Celery app and the run store read them once, at import.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from bench.harness import CONCURRENCY, BenchFailure, Counters, running_worker, start_redis
from bench.measure import (
    POLL_S,
    RUN_DEADLINE_S,
    BatonSide,
    LimitedBatonSide,
    RawSide,
    Side,
    check_output,
    first_messages,
    measure,
    run_once,
    wait_finished,
)
from bench.report import TARGET, Series, figures_of, printed

if TYPE_CHECKING:
    from bench.shapes import Shape
    from tests.support import RedisServer


@dataclass(frozen=True)
class Options:
    rounds: int
    runs: int
    branches: int
    steps: int
    alone: int
    json_path: Path | None
    limited: bool = False


DEFAULTS = (3, 200, 1000, 100, 10)
REPEATS = {"c": 5}
"""Measurements per round of a shape whose one run is too short to time once on a noisy box."""
QUICK = (1, 20, 100, 40, 3)  # 40 steps, not 20: the chain still crosses a segment boundary


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, help="measurements per shape and side (3)")
    parser.add_argument("--runs", type=int,
                        help="runs of the 5-step workflow (a) and of the 10-step chain (d) (200)")
    parser.add_argument("--branches", type=int, help="branches of the fork, shape (b) (1000)")
    parser.add_argument("--steps", type=int, help="steps of the chain, shape (c) (100)")
    parser.add_argument("--alone", type=int,
                        help="lone runs of (a) per round, for the idle latency (10)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 round, 20 runs, 100 branches, 40 steps, 3 lone runs")
    parser.add_argument("--limited", action="store_true",
                        help="also run Baton with every step under a limit it never reaches")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write every figure to PATH as JSON")
    args = parser.parse_args(argv)
    given = (args.rounds, args.runs, args.branches, args.steps, args.alone)
    base = QUICK if args.quick else DEFAULTS
    counts = [fallback if value is None else value
              for value, fallback in zip(given, base, strict=True)]
    if min(counts) < 1:
        parser.error("every count must be at least 1")
    rounds, runs, branches, steps, alone = counts
    return Options(rounds, runs, branches, steps, alone, args.json, args.limited)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warm_up(sides: list[Side], shapes: list[Shape]) -> dict[str, dict[str, float]]:
    """One run of each shape per side, untimed by the table; returns each one's latency.

    The full-size definitions are used so that each pool process has built and cached
    their plans before timing starts; the first-use cost is kept in the JSON.
    """
    return {side.name: {shape.key: run_once(side, shape) for shape in shapes if side.applies(shape)}
            for side in sides}


def run_rounds(
    sides: list[Side], shapes: list[Shape], lone: Shape, options: Options, counters: Counters
) -> dict[str, dict[str, Series]]:
    results = {shape.key: {side.name: Series() for side in sides if side.applies(shape)}
               for shape in shapes}
    for number in range(options.rounds):
        # alternate who goes first, so warming and drift favour neither side
        order = sides if number % 2 == 0 else sides[::-1]
        for shape in shapes:
            for repeat in range(REPEATS.get(shape.key, 1)):
                for side in order if repeat % 2 == 0 else order[::-1]:
                    if not side.applies(shape):
                        continue
                    results[shape.key][side.name].samples.append(measure(side, shape, counters))
        for side in (side for side in order if side.applies(lone)):
            alone = [run_once(side, lone) for _ in range(options.alone)]
            results[lone.key][side.name].alone_ms += alone
        progress(f"round {number + 1}/{options.rounds} done")
    return results


def environment(redis_url: str) -> dict[str, Any]:
    import celery

    server = redis.Redis.from_url(redis_url).info("server")
    return {
        "python": sys.version.split()[0],
        "celery": celery.__version__,
        "redis_server": server["redis_version"],
        "cpus": os.cpu_count(),
        "worker": f"prefork -c {CONCURRENCY}",
        "poll_interval_s": POLL_S,
    }


def benchmark(options: Options, server: RedisServer) -> dict[str, Any]:
    os.environ["REDIS_URL"] = server.url
    os.environ["BATON_TRANSFORMATIONS"] = "bench.shapes"
    from bench import shapes as workloads  # imports app, now configured

    shapes = [workloads.many_small_runs(options.runs), workloads.wide_fork(options.branches),
              workloads.long_chain(options.steps), workloads.short_chains(options.runs)]
    lone = workloads.many_small_runs(1)  # same definition as (a), one run at a time
    sides: list[Side] = [BatonSide(), RawSide(workloads.RAW), RawSide(workloads.RAW_CHORD)]
    if options.limited:
        sides.append(LimitedBatonSide())
    sizes, probes = first_messages(sides, shapes[2], server.url)
    with running_worker(server.dir / "worker.log") as worker:
        progress(f"worker {worker.name} up; warming up")
        started = time.perf_counter()
        finish(probes, shapes[2])
        first_runs = warm_up(sides, [lone, *shapes[1:]])
        progress(f"warm-up took {time.perf_counter() - started:.1f}s; measuring")
        counters = Counters(server.url, worker.pid)
        results = run_rounds(sides, shapes, lone, options, counters)
    return {
        "environment": environment(server.url),
        "options": {**asdict(options), "repeats": REPEATS,
                    "json_path": str(options.json_path) if options.json_path else None},
        "target": TARGET,
        "shapes": figures_of(shapes, results),
        "first_message_bytes": {"shape": shapes[2].title, **sizes},
        "warm_up_latency_ms": first_runs,
    }


def finish(runs: list[tuple[Side, Any]], shape: Shape) -> None:
    """Wait for runs sent before the worker started, and check them like any other."""
    for side, handle in runs:
        wait_finished(side, handle, time.monotonic() + RUN_DEADLINE_S)
        check_output(side, shape, handle)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    server: RedisServer | None = None
    try:
        server = start_redis()
        figures = benchmark(options, server)
    except BenchFailure as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted; worker and Redis stopped", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.cleanup()
    print(printed(figures), flush=True)
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
