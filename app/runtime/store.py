"""The run store: runs, steps and definitions in Redis.

Every state change a run goes through is one atomic call here (a Lua script or a single
pipeline), so a worker that dies between two calls leaves a consistent record. The keys
of one run share a hash tag (`{run_id}`) so that its scripts stay single-slot.
Knows nothing of Celery; callers pass plain values.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis

from app.errors import StoreUnavailable

PREFIX: Final = "baton"
RUNS_INDEX: Final = f"{PREFIX}:runs"
"""Sorted set of run ids by creation time (for listing)."""

TERMINAL_STEP_STATUSES: Final = frozenset(
    {"COMPLETED", "COMPLETED_WITH_ERRORS", "SKIPPED", "FAILED", "FAILED_WITH_TERMINAL_ERROR",
     "TIMED_OUT", "CANCELED"}
)
DONE_STEP_STATUSES: Final = ("COMPLETED", "COMPLETED_WITH_ERRORS", "SKIPPED")
"""A step in one of these never runs again: a redelivered message only lets the route go on."""


def run_key(run_id: str) -> str:
    return f"{PREFIX}:run:{{{run_id}}}"


def refs_key(run_id: str) -> str:
    return f"{PREFIX}:run:{{{run_id}}}:refs"


def step_key(run_id: str, ref: str) -> str:
    return f"{PREFIX}:step:{{{run_id}}}:{ref}"


def definition_key(digest: str) -> str:
    return f"{PREFIX}:definition:{digest}"


def idempotency_key(key: str) -> str:
    return f"{PREFIX}:idempotency:{key}"


def now_ms() -> int:
    return int(time.time() * 1000)


# KEYS: run, idempotency-or-run (placeholder), definition, runs index
# ARGV: run id, retention, definition json, idempotency key ('' for none), now, then field pairs
_CREATE_RUN = """
if ARGV[4] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return existing end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
end
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGET', KEYS[1], 'workflowId') end
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[5] - ARGV[2] * 1000)
return ARGV[1]
"""

# KEYS: run, step, refs, dependency steps...
# ARGV: ref, now, worker, task id, retention, max deliveries, task type, name
_CLAIM_STEP = """
local run_status = redis.call('HGET', KEYS[1], 'status')
if not run_status then return {'missing'} end
local step_status = redis.call('HGET', KEYS[2], 'status')
if step_status == 'COMPLETED' or step_status == 'COMPLETED_WITH_ERRORS'
   or step_status == 'SKIPPED' then
  return {'done', step_status}
end
if run_status ~= 'RUNNING' then return {'stopped', run_status} end
local deliveries = redis.call('HINCRBY', KEYS[2], 'deliveries', 1)
redis.call('HSET', KEYS[2], 'status', 'IN_PROGRESS', 'referenceTaskName', ARGV[1],
  'startTime', ARGV[2], 'workerId', ARGV[3], 'taskId', ARGV[4], 'taskType', ARGV[7],
  'taskDefName', ARGV[8])
local attempts = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[5])
if deliveries > tonumber(ARGV[6]) then return {'exhausted', tostring(deliveries)} end
local out = {'run', attempts, redis.call('HGETALL', KEYS[1])}
for i = 4, #KEYS do out[#out + 1] = redis.call('HGETALL', KEYS[i]) end
return out
"""

# KEYS: run, step ; ARGV: now, retention, step status, error json, reason, ref, run status, input
_FAIL_STEP = """
redis.call('HSET', KEYS[2], 'status', ARGV[3], 'error', ARGV[4], 'endTime', ARGV[1],
  'reasonForIncompletion', ARGV[5])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[2], 'input', ARGV[8]) end
redis.call('EXPIRE', KEYS[2], ARGV[2])
if redis.call('HGET', KEYS[1], 'status') == 'RUNNING' then
  redis.call('HSET', KEYS[1], 'status', ARGV[7], 'reasonForIncompletion', ARGV[5],
    'failedReferenceTaskName', ARGV[6], 'endTime', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: run, refs ; ARGV: now, retention, output json
_COMPLETE_RUN = """
if redis.call('HGET', KEYS[1], 'status') ~= 'RUNNING' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'COMPLETED', 'output', ARGV[3], 'endTime', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: run, step, refs ; ARGV: now, retention, input, output, run output ('' unless final)
_COMPLETE_STEP = """
redis.call('HSET', KEYS[2], 'status', 'COMPLETED', 'input', ARGV[3], 'output', ARGV[4],
  'endTime', ARGV[1])
redis.call('HDEL', KEYS[2], 'error', 'reasonForIncompletion')
redis.call('EXPIRE', KEYS[2], ARGV[2])
if ARGV[5] == '' or redis.call('HGET', KEYS[1], 'status') ~= 'RUNNING' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'COMPLETED', 'output', ARGV[5], 'endTime', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Claim:
    """The answer to a step's claim: what to do, and the state to resolve its input from."""

    verdict: str  # run | done | stopped | missing | exhausted
    detail: str | None
    run: dict[str, str]
    dependencies: dict[str, dict[str, str]]
    attempts: int = 0
    """Attempts of this step so far, this one included."""


class RunStore:
    """Reads and writes run and step records; one instance per process and Redis URL."""

    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.client = client
        self.retention = retention_seconds
        self._create = client.register_script(_CREATE_RUN)
        self._claim = client.register_script(_CLAIM_STEP)
        self._fail = client.register_script(_FAIL_STEP)
        self._complete_run = client.register_script(_COMPLETE_RUN)
        self._complete_step = client.register_script(_COMPLETE_STEP)

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        *,
        digest: str,
        definition_json: str,
        fields: Mapping[str, str],
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
        keys = [
            run_key(run_id),
            idempotency_key(idempotency) if idempotency else run_key(run_id),
            definition_key(digest),
            RUNS_INDEX,
        ]
        args = [run_id, self.retention, definition_json, idempotency or "", created, *pairs]
        result = self._call(self._create, keys, args)
        return str(result)

    def delete_run(self, run_id: str, idempotency: str | None) -> None:
        """Remove a run that was never started (its first message could not be sent)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(run_key(run_id), refs_key(run_id))
        pipe.zrem(RUNS_INDEX, run_id)
        if idempotency:
            pipe.delete(idempotency_key(idempotency))
        self._execute(pipe)

    def get_run(self, run_id: str) -> dict[str, str] | None:
        fields = self._run(lambda: self.client.hgetall(run_key(run_id)))
        return fields or None

    def get_status(self, run_id: str) -> str | None:
        value = self._run(lambda: self.client.hget(run_key(run_id), "status"))
        return str(value) if value is not None else None

    def get_definition(self, digest: str) -> str | None:
        value = self._run(lambda: self.client.get(definition_key(digest)))
        return str(value) if value is not None else None

    def get_steps(self, run_id: str) -> dict[str, dict[str, str]]:
        refs = sorted(self._run(lambda: self.client.smembers(refs_key(run_id))))
        return self.get_step_records(run_id, refs)

    def get_step_records(self, run_id: str, refs: Sequence[str]) -> dict[str, dict[str, str]]:
        """The records of the named steps (missing ones are left out), one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(run_key(run_id))
        for ref in refs:
            pipe.hgetall(step_key(run_id, ref))
        _, *records = self._execute(pipe)
        return {ref: rec for ref, rec in zip(refs, records, strict=True) if rec}

    def complete_run(self, run_id: str, output: Any) -> bool:
        """Mark a RUNNING run COMPLETED with its output; False if it had already ended."""
        pipe_args = [now_ms(), self.retention, _dumps(output)]
        keys = [run_key(run_id), refs_key(run_id)]
        return bool(self._call(self._complete_run, keys, pipe_args))

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
    ) -> Claim:
        """Atomically mark a step IN_PROGRESS and read what its input resolves from."""
        deps = list(dependencies)
        keys = [run_key(run_id), step_key(run_id, ref), refs_key(run_id)]
        keys += [step_key(run_id, dep) for dep in deps]
        args = [ref, now_ms(), worker, task_id, self.retention, max_deliveries, task_type, name]
        reply = self._call(self._claim, keys, args)
        verdict = str(reply[0])
        if verdict != "run":
            return Claim(verdict, str(reply[1]) if len(reply) > 1 else None, {}, {})
        run = _pairs(reply[2])
        found = {dep: _pairs(rec) for dep, rec in zip(deps, reply[3:], strict=True) if rec}
        return Claim(verdict, None, run, found, attempts=int(reply[1]))

    def complete_step(
        self,
        run_id: str,
        ref: str,
        *,
        input: Any,
        output: Any,
        run_output: Any = None,
        final: bool = False,
    ) -> bool:
        """Record a step's input and output; with `final`, complete the run in the same call.

        Returns True when this call completed the run.
        """
        keys = [run_key(run_id), step_key(run_id, ref), refs_key(run_id)]
        ending = _dumps(run_output) if final else ""
        args = [now_ms(), self.retention, _dumps(input), _dumps(output), ending]
        return bool(self._call(self._complete_step, keys, args))

    def retry_step(self, run_id: str, ref: str, *, error: Mapping[str, Any], input: Any) -> None:
        """Record a failed attempt that will be tried again; the delivery count starts anew."""
        fields: dict[Any, Any] = {
            "status": "SCHEDULED",
            "error": _dumps(error),
            "input": _dumps(input),
            "endTime": str(now_ms()),
            "deliveries": "0",
            "reasonForIncompletion": f"{error.get('type')}: {error.get('message')}",
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(step_key(run_id, ref), mapping=fields)
        pipe.expire(step_key(run_id, ref), self.retention)
        self._execute(pipe)

    def record_step(self, run_id: str, ref: str, fields: Mapping[str, str]) -> None:
        """Write a step record that no task of its own runs for (a fork, before its join)."""
        pipe = self.client.pipeline(transaction=True)
        record: dict[Any, Any] = dict(fields)
        pipe.hset(step_key(run_id, ref), mapping=record)
        pipe.expire(step_key(run_id, ref), self.retention)
        pipe.sadd(refs_key(run_id), ref)
        self._execute(pipe)

    def fail_step(
        self,
        run_id: str,
        ref: str,
        *,
        error: Mapping[str, Any],
        input: Any = None,
        step_status: str = "FAILED",
        run_status: str = "FAILED",
    ) -> bool:
        """Record a step's failure and end its run with it; False if the run had ended."""
        reason = f"{error.get('type', 'Error')}: {error.get('message', '')}"
        keys = [run_key(run_id), step_key(run_id, ref)]
        given = _dumps(input) if input is not None else ""
        args = [now_ms(), self.retention, step_status, _dumps(error), reason, ref, run_status]
        args.append(given)
        return bool(self._call(self._fail, keys, args))

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self._run(lambda: script(keys=keys, args=args))

    def _execute(self, pipe: Any) -> list[Any]:
        return list(self._run(pipe.execute))

    @staticmethod
    def _run(call: Any) -> Any:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"cannot reach Redis: {exc}") from exc


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    it = iter(flat)
    return {str(k): str(v) for k, v in zip(it, it, strict=True)}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
