"""Where a step's time goes: the worker's CPU split between Celery, the Redis client and
Baton, per shape and side, beside Redis's own CPU and commands.

`python -m bench.profile [--runs N] [--branches N] [--steps N] [--shapes abcd]`. Runs each
shape's workload once per side against a private Redis and one worker run as a single
process (`-P solo`) under cProfile timing CPU (not wall-clock: a worker waiting for its
next message spends none), so every function the worker runs is counted, then sorts each
function's own time by where its code lives:

- `celery`: celery, kombu, billiard, vine, amqp (messaging, tracing, events, chords);
- `redis-py`: the Redis client's own code and the socket calls it makes;
- `baton`: `app/` (the step runner, the store's calls, expressions, records);
- `json`, `other`: serialisation and the rest of the standard library.

Beside it, what the task bodies take (cumulative: Baton's step runner with the run
store's calls it makes; raw canvas's step function) and what is spent around them
(Celery: receiving, tracing, results, events, chords, sending the route on).

cProfile slows the worker down several fold and weighs each call alike, so the shares
are what to read, not the milliseconds; `python -m bench.run` times the real thing.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import redis

from bench.harness import ROOT, BenchFailure, start_redis, wait_for_worker
from bench.measure import (
    RUN_DEADLINE_S,
    BatonSide,
    LimitedBatonSide,
    RawSide,
    Side,
    check_output,
    wait_finished,
)

CATEGORIES = ("celery", "redis-py", "baton", "json", "other")
_CELERY = ("/celery/", "/kombu/", "/billiard/", "/vine/", "/amqp/")


def category(path: str, name: str) -> str:
    """Where a function's own time is counted (see the module)."""
    if any(part in path for part in _CELERY):
        return "celery"
    if "/redis/" in path:
        return "redis-py"
    if f"{ROOT}/app/" in path:
        return "baton"
    if "/json/" in path or "json" in name:
        return "json"
    return "other"


def profiled_worker(queues: list[str], profile: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bench.profile", "--as-worker", str(profile), "-A",
               "app", "worker", "-Q", ",".join(queues), "-P", "solo", "-l", "WARNING",
               "-n", f"profile-{os.getpid()}@%h"]
    with log.open("ab") as sink:
        return subprocess.Popen(command, cwd=ROOT, env=dict(os.environ), stdout=sink,
                                stderr=subprocess.STDOUT)


def split(profile: Path) -> dict[str, float]:
    """Own CPU seconds by category (see `category`); a built-in function's (`len`,
    `str.upper`, a socket's `recv_into`) goes where its heaviest caller's does."""
    stats: Any = getattr(pstats.Stats(str(profile)), "stats")  # noqa: B009 (untyped)
    totals: dict[str, float] = defaultdict(float)
    for (path, _line, name), (_calls, _primitive, own, _cumulative, callers) in stats.items():
        if path == "~" and callers:
            heaviest = max(callers.items(), key=lambda item: item[1][3])[0]
            path, name = heaviest[0], heaviest[2]
        totals[category(path, name)] += own
    bodies = [(path, name) for path, _line, name in stats
              if (path.endswith("app/runtime/step.py") and name == "run")
              or (path.endswith("bench/shapes.py") and name in ("raw_step", "raw_join"))]
    totals["body"] = sum(stats[key][3] for key in stats if (key[0], key[2]) in bodies)
    return dict(totals)


def profile_side(side: Side, shape: Any, server_url: str, workdir: Path) -> dict[str, Any]:
    from app import celery as celery_app
    from app.celery_app import all_queues

    target = workdir / f"{shape.key}-{side.name}.prof"
    log = workdir / "worker.log"
    worker = profiled_worker(all_queues(), target, log)
    client = redis.Redis.from_url(server_url)
    try:
        wait_for_worker(celery_app, worker, log)
        _run_all(side, shape, max(1, shape.runs // 10))  # warm-up: plans, imports, pools
        Path(f"{target}.start").touch()
        before = client.info("stats")["total_commands_processed"], _redis_cpu(client)
        _run_all(side, shape, shape.runs)
        after = client.info("stats")["total_commands_processed"], _redis_cpu(client)
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: cProfile writes its file
        worker.wait(timeout=60)
    steps = shape.steps
    shares = split(target)
    return {"ms_per_step": {key: 1000 * shares.get(key, 0.0) / steps for key in CATEGORIES},
            "body_ms_per_step": 1000 * shares["body"] / steps,
            "redis_cpu_ms_per_step": 1000 * (after[1] - before[1]) / steps,
            "redis_cmds_per_step": (after[0] - before[0]) / steps}


def _run_all(side: Side, shape: Any, runs: int) -> None:
    handles = [side.submit(shape) for _ in range(runs)]
    deadline = time.monotonic() + RUN_DEADLINE_S
    for handle in handles:
        wait_finished(side, handle, deadline)
        check_output(side, shape, handle)


def _redis_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def printed(rows: list[tuple[str, str, dict[str, Any]]]) -> str:
    header = ["shape", "side", *[f"{key} ms" for key in CATEGORIES], "worker ms",
              "in task body ms", "around it ms", "redis cpu ms", "redis cmds"]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for shape, side, figures in rows:
        own = figures["ms_per_step"]
        total = sum(own.values())
        lines.append(" | ".join([
            shape, side, *[f"{own[key]:.2f}" for key in CATEGORIES], f"{total:.2f}",
            f"{figures['body_ms_per_step']:.2f}", f"{total - figures['body_ms_per_step']:.2f}",
            f"{figures['redis_cpu_ms_per_step']:.2f}", f"{figures['redis_cmds_per_step']:.1f}",
        ]))
    return "\n".join(f"| {line} |" for line in lines)


def run_worker(profile: str, celery_args: list[str]) -> None:
    """Run `celery <celery_args>` in this process, its CPU profile written to `profile`.

    Profiling starts with the first task after `<profile>.start` exists, so the worker's
    start and the warm-up runs (imports, plans built) are not counted.
    """
    from celery.__main__ import main as celery_main
    from celery.signals import task_prerun

    profiler = cProfile.Profile(time.process_time)
    flag = Path(f"{profile}.start")
    started = []

    def start(**_: Any) -> None:
        if not started and flag.exists():
            started.append(True)
            profiler.enable()  # the solo pool runs tasks on this thread

    task_prerun.connect(start, weak=False)
    sys.argv = ["celery", *celery_args]
    try:
        celery_main()
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--as-worker"]:
        run_worker(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="runs of (a) and (d) (100)")
    parser.add_argument("--branches", type=int, default=500, help="branches of (b) (500)")
    parser.add_argument("--steps", type=int, default=100, help="steps of (c) (100)")
    parser.add_argument("--shapes", default="abcd", help="which shapes (abcd)")
    parser.add_argument("--limited", action="store_true",
                        help="add a Baton side with every step under a limit never reached")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each side's cProfile file in this directory")
    args = parser.parse_args(argv)
    server = start_redis()
    try:
        os.environ["REDIS_URL"] = server.url
        os.environ["BATON_TRANSFORMATIONS"] = "bench.shapes"
        from bench import shapes as workloads  # imports app, now configured

        chosen = {"a": workloads.many_small_runs(args.runs),
                  "b": workloads.wide_fork(args.branches),
                  "c": workloads.long_chain(args.steps),
                  "d": workloads.short_chains(args.runs)}
        sides: list[Side] = [BatonSide(), RawSide(workloads.RAW), RawSide(workloads.RAW_CHORD)]
        if args.limited:
            sides.insert(1, LimitedBatonSide())
        rows = []
        with tempfile.TemporaryDirectory() as scratch:
            workdir = str(args.keep) if args.keep is not None else scratch
            Path(workdir).mkdir(parents=True, exist_ok=True)
            for key in args.shapes:
                shape = chosen[key]
                for side in sides:
                    if side.applies(shape):
                        figures = profile_side(side, shape, server.url, Path(workdir))
                        rows.append((f"({key})", side.name, figures))
                        print(f"profiled ({key}) {side.name}", file=sys.stderr, flush=True)
        print(printed(rows))
    except BenchFailure as exc:
        print(f"profile failed: {exc}", file=sys.stderr)
        return 1
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
