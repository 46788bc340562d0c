"""Measuring one shape on one side: submit every run, wait for all, check them, count costs.

The two sides differ only in how a run starts and how its end is read; waiting is the
same loop for both, polling one store read per check at one interval, so neither side
is waited on more finely than the other. Correctness is checked after the clock stops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import redis

from bench import messages
from bench.harness import BenchFailure, Counters, Snapshot

if TYPE_CHECKING:
    from bench.shapes import Shape

POLL_S = 0.005
RUN_DEADLINE_S = 300.0


class Side(Protocol):
    """How one side starts a run of a shape and tells when and how it ended."""

    name: str

    def applies(self, shape: Shape) -> bool: ...
    def expected(self, shape: Shape) -> Any: ...
    def submit(self, shape: Shape) -> Any: ...
    def finished(self, handle: Any) -> bool: ...
    def ended_at(self, handle: Any) -> float: ...
    def output(self, handle: Any) -> Any: ...


class BatonSide:
    name = "baton"

    def applies(self, shape: Shape) -> bool:
        return True

    def expected(self, shape: Shape) -> Any:
        return shape.baton_output

    def submit(self, shape: Shape) -> Any:
        from app import submit_workflow

        return submit_workflow(shape.definition)

    def finished(self, handle: Any) -> bool:
        status = handle.status  # one HGET, as one GET of a Celery result on the raw side
        if status.terminal and status.value != "COMPLETED":
            raise BenchFailure(f"baton run {handle.id} ended {status.value}: {handle.record()}")
        return bool(status.terminal)

    def ended_at(self, handle: Any) -> float:
        return int(handle.record()["endTime"]) / 1000

    def output(self, handle: Any) -> Any:
        return handle.output


class LimitedBatonSide(BatonSide):
    """Baton with every bench step under a concurrency limit it never reaches, declared on
    its transformation (bench.shapes.bench_step_limited, on the same queue), so the
    definitions stay the same size: what a limit costs by itself at run time."""

    name = "baton_limit"

    def submit(self, shape: Shape) -> Any:
        from app import submit_workflow

        return submit_workflow(limited(shape.definition))


def limited(value: Any) -> Any:
    """A definition with each bench step run by the limited twin of its transformation."""
    if isinstance(value, list):
        return [limited(item) for item in value]
    if not isinstance(value, dict):
        return value
    found = {key: limited(item) for key, item in value.items()}
    if found.get("name") == "bench_step" and "taskReferenceName" in found:
        found["name"] = "bench_step_limited"
    return found


class RawSide:
    """One raw canvas variant, named as the shapes name it; shapes without it skip it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def applies(self, shape: Shape) -> bool:
        return self.name in shape.canvases

    def expected(self, shape: Shape) -> Any:
        return shape.canvases[self.name].output

    def submit(self, shape: Shape) -> Any:
        return shape.canvases[self.name].build().apply_async()

    def finished(self, handle: Any) -> bool:
        state = handle.state
        if state in ("FAILURE", "REVOKED", "REJECTED"):
            raise BenchFailure(f"raw result {handle.id} ended {state}: {handle.result!r}")
        return bool(state == "SUCCESS")

    def ended_at(self, handle: Any) -> float:
        return float(handle.date_done.timestamp())

    def output(self, handle: Any) -> Any:
        return handle.result


@dataclass
class Sample:
    """One measurement of one shape on one side; costs are totals over the measurement."""

    wall_s: float
    submit_s: float
    latencies_ms: list[float]
    redis_commands: int
    redis_in_bytes: int
    redis_cpu_s: float
    worker_cpu_s: float | None
    client_cpu_s: float
    largest_message_bytes: int | None = None
    """The largest task message the client or the worker sent during the measurement."""


def wait_finished(side: Side, handle: Any, deadline: float) -> None:
    while not side.finished(handle):
        if time.monotonic() > deadline:
            raise BenchFailure(f"{side.name}: {handle} not finished by the deadline")
        time.sleep(POLL_S)


def check_output(side: Side, shape: Shape, handle: Any) -> None:
    expected = side.expected(shape)
    got = side.output(handle)
    if got != expected:
        raise BenchFailure(f"{side.name} ({shape.title}): wrong output {str(got)[:300]}")


def measure(side: Side, shape: Shape, counters: Counters) -> Sample:
    """Submit every run of the shape at once, then wait for all of them in turn."""
    label = messages.begin(counters.client, f"{shape.key}/{side.name}")
    before = counters.read()
    deadline = time.monotonic() + RUN_DEADLINE_S
    start = time.perf_counter()
    submitted = []
    for _ in range(shape.runs):
        submitted.append((time.time(), side.submit(shape)))
    submit_s = time.perf_counter() - start
    for _, handle in submitted:
        wait_finished(side, handle, deadline)
    wall_s = time.perf_counter() - start
    after = counters.read()
    latencies = []
    for sent_at, handle in submitted:
        check_output(side, shape, handle)
        latencies.append((side.ended_at(handle) - sent_at) * 1000)
    sample = _sample(wall_s, submit_s, latencies, before, after)
    sample.largest_message_bytes = messages.largest(counters.client, label)
    return sample


def _sample(
    wall_s: float, submit_s: float, latencies: list[float], before: Snapshot, after: Snapshot
) -> Sample:
    worker_cpu = None
    if before.worker_cpu_s is not None and after.worker_cpu_s is not None:
        worker_cpu = after.worker_cpu_s - before.worker_cpu_s
    return Sample(
        wall_s=wall_s,
        submit_s=submit_s,
        latencies_ms=latencies,
        redis_commands=after.redis_commands - before.redis_commands,
        redis_in_bytes=after.redis_in_bytes - before.redis_in_bytes,
        redis_cpu_s=after.redis_cpu_s - before.redis_cpu_s,
        worker_cpu_s=worker_cpu,
        client_cpu_s=after.client_cpu_s - before.client_cpu_s,
    )


def run_once(side: Side, shape: Shape) -> float:
    """Send one run, wait for it, check it; its end-to-end latency in ms (server clocks)."""
    sent_at = time.time()
    handle = side.submit(shape)
    wait_finished(side, handle, time.monotonic() + RUN_DEADLINE_S)
    check_output(side, shape, handle)
    return (side.ended_at(handle) - sent_at) * 1000


def first_messages(
    sides: list[Side], shape: Shape, redis_url: str
) -> tuple[dict[str, int], list[tuple[Side, Any]]]:
    """Size of each side's first broker message for a run of the shape, and the runs sent.

    Called before any worker consumes the queue, so each message can be read off the
    queue's list as it lies in Redis; the runs go on once the worker starts.
    """
    from app.queue_variants import queue_length, queue_lists  # app reads REDIS_URL at import
    from bench.shapes import QUEUE

    client = redis.Redis.from_url(redis_url)
    if queue_length(client, QUEUE):
        raise BenchFailure(f"queue '{QUEUE}' is not empty before the benchmark")
    sizes, sent = {}, []
    seen: dict[str, int] = {}
    for side in (side for side in sides if side.applies(shape)):
        sent.append((side, side.submit(shape)))
        # kombu's Redis transport LPUSHes onto the list of the message's priority
        grown = [key for key in queue_lists(QUEUE) if client.llen(key) > seen.get(key, 0)]
        newest = client.lindex(grown[0], 0) if grown else None
        seen = {key: client.llen(key) for key in queue_lists(QUEUE)}
        if newest is None:
            raise BenchFailure(f"{side.name}: no message on '{QUEUE}' after sending a run")
        sizes[side.name] = len(newest)
    return sizes, sent
