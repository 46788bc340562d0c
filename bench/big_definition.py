"""What a very large definition costs: validating, planning and submitting it, and the memory
a worker process keeps after running it.

`python -m bench.big_definition [--tasks N] [--profile] [--worker [--steps S]]`. Two
shapes of N tasks (default 100,000): a chain of SIMPLE steps, each reading the one before,
and a chain of two-branch forks with their joins. For each it times, separately, reading
the JSON into a model (`parse_definition`), `check_definition`, `build_plan` and
`submit_workflow`, the whole submit included (wall-clock and this process's CPU seconds).
`--profile` prints the top cProfile entries of one submit of each. `--worker` starts a
prefork worker (one pool process) and reports the pool process's RSS before and after it
runs a run of the chain that ends at its S-th step (a TERMINATE; 3 unless given), and its
peak: the memory comes from loading the plan, not from running steps, and more steps show
what each step of a big plan costs. A private redis-server is started; nothing else is
needed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("BATON_MAX_DEFINITION_TASKS", "1000000")
os.environ.setdefault("BATON_TRANSFORMATIONS", "tests.transformations")


def chain(tasks: int, terminate_at: int | None = None) -> dict[str, Any]:
    """A chain of `tasks` SIMPLE steps, each reading the output of the one before."""
    steps: list[dict[str, Any]] = []
    for i in range(tasks):
        if i == terminate_at:
            steps.append({"name": "end", "taskReferenceName": f"t{i}", "type": "TERMINATE",
                          "inputParameters": {"terminationStatus": "COMPLETED"}})
            continue
        value = "${workflow.input.x}" if i == 0 else f"${{t{i - 1}.output.x}}"
        steps.append({"name": "echo", "taskReferenceName": f"t{i}", "type": "SIMPLE",
                      "inputParameters": {"x": value, "n": i}})
    return {"name": "big_chain", "version": 1, "tasks": steps, "schemaVersion": 2}


def forks(tasks: int) -> dict[str, Any]:
    """Forks of two one-step branches and their joins, chained: four tasks per fork."""
    steps: list[dict[str, Any]] = []
    for i in range(tasks // 4):
        left, right = f"l{i}", f"r{i}"
        branch = [[{"name": "echo", "taskReferenceName": ref, "type": "SIMPLE",
                    "inputParameters": {"x": "${workflow.input.x}"}}] for ref in (left, right)]
        steps.append({"name": "fork", "taskReferenceName": f"f{i}", "type": "FORK_JOIN",
                      "forkTasks": branch})
        steps.append({"name": "join", "taskReferenceName": f"j{i}", "type": "JOIN",
                      "joinOn": [left, right]})
    return {"name": "big_forks", "version": 1, "tasks": steps, "schemaVersion": 2}


def timed(what: str, call: Callable[[], Any]) -> Any:
    """Run `call`, printing its wall-clock seconds and this process's CPU seconds (steadier on
    a machine busy with other work)."""
    started, cpu = time.perf_counter(), time.process_time()
    value = call()
    print(f"  {what:<22} {time.perf_counter() - started:7.2f} s "
          f"({time.process_time() - cpu:5.2f} s CPU)")
    return value


def phases(data: dict[str, Any]) -> None:
    from app import registry
    from app.client import submit_workflow
    from app.compiler.plan import build_plan
    from app.dsl.validate import check_definition, parse_definition
    from app.loader import ensure_loaded

    ensure_loaded()
    transformations = registry.transformations()
    definition = timed("parse_definition", lambda: parse_definition(data, transformations))
    timed("check_definition", lambda: check_definition(definition, transformations))
    timed("build_plan", lambda: build_plan(definition, transformations, validated=True))
    timed("submit_workflow (all)", lambda: submit_workflow(data, {"x": 1}))


def profile(data: dict[str, Any], top: int = 20) -> None:
    from app.client import submit_workflow

    profiler = cProfile.Profile()
    profiler.runcall(submit_workflow, data, {"x": 1})
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    print(out.getvalue())


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory now (VmRSS) or at its highest so far (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def pool_pid(parent: int) -> int:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return int(children[0])


def worker_memory(tasks: int, steps: int) -> None:
    from app.celery_app import all_queues
    from app.client import submit_workflow
    from tests.support import CeleryWorker

    log = Path(tempfile.mkdtemp(prefix="baton-bench-")) / "worker.log"
    worker = CeleryWorker(log, all_queues(), concurrency=1).ready()
    try:
        # a small run first, so the pool process has imported and connected everything
        submit_workflow(chain(3), {"x": 1}).wait(timeout=60)
        pid = pool_pid(worker.process.pid)
        before = rss_kib(pid)
        run = timed("submit (terminating)", lambda: submit_workflow(
            chain(tasks, terminate_at=steps - 1), {"x": 1}))
        started = time.perf_counter()
        status = run.wait(timeout=600)
        seconds = time.perf_counter() - started
        print(f"  run of {steps} steps ended {status.value} in {seconds:.2f} s "
              f"({1000 * seconds / steps:.1f} ms a step)")
        # the run's status is recorded before its last step's task returns: a small run
        # after it, on the one pool process, is run once that task has let go of the plan
        submit_workflow(chain(3), {"x": 1}).wait(timeout=60)
        after, peak = rss_kib(pid), rss_kib(pid, "VmHWM")
        print(f"  pool process RSS: before {before / 1024:.1f} MiB, after {after / 1024:.1f} "
              f"MiB, grew {(after - before) / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB")
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.big_definition", description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks per definition")
    parser.add_argument("--profile", action="store_true", help="profile a submit of each shape")
    parser.add_argument("--worker", action="store_true", help="measure a worker's memory")
    parser.add_argument("--steps", type=int, default=3, help="steps the --worker run takes")
    options = parser.parse_args(argv)

    from tests.support import RedisServer, redis_binary

    binary = redis_binary()
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    server = RedisServer(binary, appendonly=False)
    server.start()
    os.environ["REDIS_URL"] = server.url
    try:
        if options.profile:
            for name, shape in (("chain", chain), ("forks", forks)):
                print(f"submit of {name} of {options.tasks} tasks")
                profile(shape(options.tasks))
        elif options.worker:
            worker_memory(options.tasks, options.steps)
        else:
            for name, shape in (("chain", chain), ("forks", forks)):
                print(f"{name} of {options.tasks} tasks")
                phases(shape(options.tasks))
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
