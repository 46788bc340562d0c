"""The run store: runs, steps and definitions in Redis.

Every state change a run goes through is one atomic call here (a Lua script or a single
pipeline), so a worker that dies between two calls leaves a consistent record. The keys
of one run share a hash tag (`{run_id}`) so that its scripts stay single-slot.
Knows nothing of Celery; callers pass plain values (and the task class sets ROUTE_ROOT).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

import redis

from app.errors import StoreUnavailable
from app.runtime import scripts
from app.runtime.keys import (
    RUNS_INDEX,
    attempts_key,
    definition_key,
    dynamic_key,
    idempotency_key,
    refs_key,
    run_key,
    step_key,
    vars_key,
)

TERMINAL_STEP_STATUSES: Final = frozenset(
    {"COMPLETED", "COMPLETED_WITH_ERRORS", "SKIPPED", "FAILED", "FAILED_WITH_TERMINAL_ERROR",
     "TIMED_OUT", "CANCELED"}
)


ROUTE_ROOT: ContextVar[str] = ContextVar("baton_route_root", default="")
"""The Celery root id of the route the running task belongs to ('' outside a task).

Every write a task makes to its run is fenced with it (see scripts._fence); the task
class sets it before each task runs.
"""

END_HOOKS: list[Callable[[str, str, str], None]] = []
"""Called with (run id, status, reason) when a run ends without completing."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Claim:
    """The answer to a step's claim: what to do, and the state to resolve its input from."""

    verdict: str  # run | done | stopped | missing | exhausted | stale
    detail: str | None
    run: dict[str, str]
    dependencies: dict[str, dict[str, str]]
    attempts: int = 0
    """Attempts of this step so far, this one included."""
    variables: dict[str, str] | None = None
    """The run's variables, one JSON value per name."""


class RunStore:
    """Reads and writes run and step records; one instance per process and Redis URL."""

    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.client = client
        self.retention = retention_seconds
        self._create = client.register_script(scripts.CREATE_RUN)
        self._claim = client.register_script(scripts.CLAIM_STEP)
        self._fail = client.register_script(scripts.FAIL_STEP)
        self._end_run = client.register_script(scripts.END_RUN)
        self._complete_step = client.register_script(scripts.COMPLETE_STEP)
        self._retry = client.register_script(scripts.RETRY_STEP)

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        *,
        digest: str,
        definition_json: str,
        fields: Mapping[str, str],
        variables: Mapping[str, Any],
        idempotency: str | None,
    ) -> str:
        """Write a new run atomically; returns the id of the run now standing for it.

        With an idempotency key that was seen before, nothing is written and the earlier
        run's id is returned.
        """
        created = now_ms()
        pairs: list[str] = []
        for name, value in fields.items():
            pairs += [name, value]
        for name, variable in variables.items():
            pairs += [name, _dumps(variable)]
        keys = [
            run_key(run_id),
            idempotency_key(idempotency) if idempotency else run_key(run_id),
            definition_key(digest),
            RUNS_INDEX,
            vars_key(run_id),
        ]
        args = [run_id, self.retention, definition_json, idempotency or "", created,
                2 * len(fields), *pairs]
        result = self._call(self._create, keys, args)
        return str(result)

    def delete_run(self, run_id: str, idempotency: str | None) -> None:
        """Remove a run that was never started (its first message could not be sent)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(run_key(run_id), refs_key(run_id), vars_key(run_id), dynamic_key(run_id))
        pipe.zrem(RUNS_INDEX, run_id)
        if idempotency:
            pipe.delete(idempotency_key(idempotency))
        self.execute(pipe)

    def get_run(self, run_id: str) -> dict[str, str] | None:
        fields = self.guard(lambda: self.client.hgetall(run_key(run_id)))
        return fields or None

    def get_status(self, run_id: str) -> str | None:
        value = self.guard(lambda: self.client.hget(run_key(run_id), "status"))
        return str(value) if value is not None else None

    def get_run_fields(self, run_id: str, *names: str) -> dict[str, str]:
        """The named fields of a run's record (missing ones are left out)."""
        values = self.guard(lambda: self.client.hmget(run_key(run_id), list(names)))
        return {name: str(v) for name, v in zip(names, values, strict=True) if v is not None}

    def get_definition(self, digest: str) -> str | None:
        value = self.guard(lambda: self.client.get(definition_key(digest)))
        return str(value) if value is not None else None

    def get_steps(self, run_id: str) -> dict[str, dict[str, str]]:
        refs = sorted(self.guard(lambda: self.client.smembers(refs_key(run_id))))
        return self.get_step_records(run_id, refs)

    def get_step_records(self, run_id: str, refs: Sequence[str]) -> dict[str, dict[str, str]]:
        """The records of the named steps (missing ones are left out), one round trip."""
        return self.read_state(run_id, refs)[2]

    def read_state(
        self, run_id: str, refs: Sequence[str]
    ) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, str]]]:
        """(run record, variables, records of the named steps), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(run_key(run_id))
        pipe.hgetall(vars_key(run_id))
        for ref in refs:
            pipe.hgetall(step_key(run_id, ref))
        run, variables, *records = self.execute(pipe)
        found = {ref: rec for ref, rec in zip(refs, records, strict=True) if rec}
        return run, variables, found

    def define_dynamic_steps(self, run_id: str, steps: Mapping[str, Any]) -> None:
        """Keep the steps a run defines at run time (ref -> {name, input})."""
        self._write_json_hash(dynamic_key(run_id), steps)

    def get_dynamic_step(self, run_id: str, ref: str) -> Any:
        value = self.guard(lambda: self.client.hget(dynamic_key(run_id), ref))
        return json.loads(value) if value else None

    def get_variables(self, run_id: str) -> dict[str, str]:
        return dict(self.guard(lambda: self.client.hgetall(vars_key(run_id))))

    def set_variables(self, run_id: str, variables: Mapping[str, Any]) -> None:
        """Set run variables (each name holds one JSON value; parallel writers do not clash)."""
        self._write_json_hash(vars_key(run_id), variables)

    def end_run(
        self,
        run_id: str,
        status: str,
        output: Any,
        *,
        reason: str = "",
        failed_ref: str = "",
    ) -> bool:
        """End a RUNNING run with a status; False if it had already ended.

        A run asked to COMPLETE after a permissive step failed ends FAILED instead.
        """
        args = [now_ms(), self.retention, status, _dumps(output), reason, failed_ref,
                ROUTE_ROOT.get()]
        keys = [run_key(run_id), refs_key(run_id)]
        return self._ended(self._call(self._end_run, keys, args), run_id)

    def complete_run(self, run_id: str, output: Any) -> bool:
        """Mark a RUNNING run COMPLETED with its output; False if it had already ended."""
        return self.end_run(run_id, "COMPLETED", output)

    # -- steps ------------------------------------------------------------------------------

    def claim_step(
        self,
        run_id: str,
        ref: str,
        *,
        dependencies: Iterable[str],
        worker: str,
        task_id: str,
        task_type: str,
        name: str,
        max_deliveries: int,
        reads_run: bool = True,
    ) -> Claim:
        """Atomically mark a step IN_PROGRESS and read what its input resolves from."""
        deps = list(dependencies)
        keys = [run_key(run_id), step_key(run_id, ref), refs_key(run_id), vars_key(run_id)]
        keys += [step_key(run_id, dep) for dep in deps]
        args = [ref, now_ms(), worker, task_id, self.retention, max_deliveries, task_type, name,
                "1" if reads_run else "0", ROUTE_ROOT.get()]
        reply = self._call(self._claim, keys, args)
        verdict = str(reply[0])
        if verdict == "done":
            # the output lets a control step that had completed send its route again
            return Claim(verdict, str(reply[1]), {}, {ref: {"output": str(reply[2])}})
        if verdict != "run":
            return Claim(verdict, str(reply[1]) if len(reply) > 1 else None, {}, {})
        run, variables = _pairs(reply[2]), _pairs(reply[3])
        found = {dep: _pairs(rec) for dep, rec in zip(deps, reply[4:], strict=True) if rec}
        return Claim(verdict, None, run, found, attempts=int(reply[1]), variables=variables)

    def complete_step(
        self,
        run_id: str,
        ref: str,
        *,
        input: Any,
        output: Any,
        run_output: Any = None,
        final: bool = False,
        alias: str | None = None,
        status: str = "COMPLETED",
        error: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record a step's input and output; with `final`, complete the run in the same call.

        `alias` is a second ref the record is copied to (a loop step's unsuffixed ref).
        Returns True when this call ended the run.
        """
        key = step_key(run_id, ref)
        keys = [run_key(run_id), key, refs_key(run_id), step_key(run_id, alias) if alias else key]
        ending = _dumps(run_output) if final else ""
        given_error = _dumps(error) if error else ""
        args = [now_ms(), self.retention, _dumps(input), _dumps(output), ending, status,
                given_error, ROUTE_ROOT.get()]
        return self._ended(self._call(self._complete_step, keys, args), run_id)

    def retry_step(self, run_id: str, ref: str, *, error: Mapping[str, Any], input: Any) -> None:
        """Record a failed attempt that will be tried again; the delivery count starts anew."""
        reason = f"{error.get('type')}: {error.get('message')}"
        keys = [step_key(run_id, ref), attempts_key(run_id, ref), run_key(run_id)]
        args = [now_ms(), self.retention, _dumps(error), _dumps(input), reason, ROUTE_ROOT.get()]
        self._call(self._retry, keys, args)

    def get_attempts(self, run_id: str, refs: Sequence[str]) -> dict[str, list[Any]]:
        """The failed attempts of the named steps, oldest first, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for ref in refs:
            pipe.lrange(attempts_key(run_id, ref), 0, -1)
        found = self.execute(pipe)
        return {ref: [json.loads(a) for a in items] for ref, items in zip(refs, found,
                                                                         strict=True)}

    def record_step(self, run_id: str, ref: str, fields: Mapping[str, str]) -> None:
        """Write a step record that no task of its own runs for (a fork, before its join)."""
        pipe = self.client.pipeline(transaction=True)
        record: dict[Any, Any] = dict(fields)
        pipe.hset(step_key(run_id, ref), mapping=record)
        pipe.expire(step_key(run_id, ref), self.retention)
        pipe.sadd(refs_key(run_id), ref)
        self.execute(pipe)

    def fail_step(
        self,
        run_id: str,
        ref: str,
        *,
        error: Mapping[str, Any],
        input: Any = None,
        step_status: str = "FAILED",
        run_status: str = "FAILED",
        message: Mapping[str, Any] | None = None,
        root: str | None = None,
    ) -> bool:
        """Record a step's failure and end its run with it; False if the run had ended.

        With `run_status=""` the run goes on (a permissive step) but cannot complete.
        `root` fences the write in place of the running task's route root (ROUTE_ROOT).
        """
        reason = f"{error.get('type', 'Error')}: {error.get('message', '')}"
        keys = [run_key(run_id), step_key(run_id, ref), attempts_key(run_id, ref)]
        given = _dumps(input) if input is not None else ""
        args = [now_ms(), self.retention, step_status, _dumps(error), reason, ref, run_status]
        args += [given, _dumps(message) if message else "",
                 ROUTE_ROOT.get() if root is None else root]
        return self._ended(self._call(self._fail, keys, args), run_id)

    # -- plumbing ---------------------------------------------------------------------------

    def run_ended(self, run_id: str) -> None:
        """Carry the end of a run that ended outside a script (terminate, time-out)."""
        run = self.get_run(run_id) or {}
        self._ended([1, run.get("status", ""), run.get("parentWorkflowId", ""),
                     run.get("parentWorkflowTaskRef", ""), run.get("reasonForIncompletion", ""),
                     run.get("root", "")], run_id)

    def _write_json_hash(self, key: str, values: Mapping[str, Any]) -> None:
        """Set fields of a hash to JSON values and renew its expiry, in one round trip."""
        if not values:
            return
        record: dict[Any, Any] = {name: _dumps(value) for name, value in values.items()}
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping=record)
        pipe.expire(key, self.retention)
        self.execute(pipe)

    def _ended(self, reply: Any, run_id: str = "") -> bool:
        """True if a script ended its run; a child run that did not complete fails its parent.

        The parent's SUB_WORKFLOW step waits on the child's route, which stops where the
        child failed, so the failure is carried up here, where every run ends.
        """
        if not isinstance(reply, list):
            return bool(reply)
        _, status, parent, parent_ref, reason, root = (str(part) for part in reply)
        if parent and status != "COMPLETED":
            error = {"type": "SubWorkflowFailed", "message": f"sub-workflow {status}: {reason}"}
            # fenced with the parent's root when the child started: a child of an attempt
            # before the parent's rerun or restart leaves the new attempt alone
            self.fail_step(parent, parent_ref, error=error, root=root)
        if status != "COMPLETED" and run_id:
            for hook in END_HOOKS:
                hook(run_id, status, reason)
        return True

    def _call(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self.guard(lambda: script(keys=keys, args=args))

    def execute(self, pipe: Any) -> list[Any]:
        return list(self.guard(pipe.execute))

    @staticmethod
    def guard(call: Any) -> Any:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"cannot reach Redis: {exc}") from exc

    # -- listing ----------------------------------------------------------------------------

    def list_runs(self, limit: int) -> list[dict[str, str]]:
        """The records of the `limit` newest runs, newest first; expired runs are left out.

        Two round trips: the ids from the index, then every run's hash in one pipeline.
        """
        if limit < 1:
            return []
        ids = self.guard(lambda: self.client.zrevrange(RUNS_INDEX, 0, limit - 1))
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(run_key(str(run_id)))
        records = self.execute(pipe)
        return [
            {"workflowId": str(run_id), **record}
            for run_id, record in zip(ids, records, strict=True)
            if record
        ]


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    it = iter(flat)
    return {str(k): str(v) for k, v in zip(it, it, strict=True)}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

