"""The run store: runs and their steps in Redis, the only code that reads or writes them.

Every state change a run goes through is one atomic script (lua/), with its preconditions
checked inside it, so a worker that dies between two calls leaves a consistent record and
a race between two callers is decided by Redis. The keys of one run share a hash tag
(`{run_id}`). Knows nothing of Celery; callers pass plain values, and the task class sets
ROUTE_ROOT, which fences every write of a task to its run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from app.config import get_settings
from app.store.base import ROUTE_ROOT, SCHEDULED_AT
from app.store.cache import OutputCache
from app.store.catalogue import Catalogue
from app.store.index import RunIndex
from app.store.keys import (
    RUNS_INDEX,
    attempts_key,
    blob_key,
    blobs_key,
    definition_key,
    dynamic_key,
    idempotency_key,
    refs_key,
    run_key,
    step_key,
    vars_key,
)
from app.store.lifecycle import Lifecycle
from app.store.records import Claim, RefusedOutput, SlotAsk, SlotFree, dumps, now_ms, pairs
from app.store.status import OPEN_RUN_STATUSES, ClaimVerdict, RunStatus, StepStatus

_PAYLOAD_FIELDS = frozenset({"input", "output"})
_STASH_MARK = "@"
"""A recorded payload held by digest starts with it (JSON text never does)."""


class RunStore(Lifecycle, Catalogue, OutputCache, RunIndex):
    """Reads and writes runs, steps and definitions; one instance per process and Redis URL.

    `on_end` is called with every run that a call of this store ended (see StoreBase).
    """

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
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value]
        for name, variable in variables.items():
            flat += [name, dumps(variable)]
        keys = [
            run_key(run_id),
            idempotency_key(idempotency) if idempotency else run_key(run_id),
            definition_key(digest),
            RUNS_INDEX,
            vars_key(run_id),
        ]
        args = [run_id, self.retention, definition_json, idempotency or "", now_ms(),
                2 * len(fields), *flat]
        return str(self.call("create_run", keys, args))

    def delete_run(self, run_id: str, digest: str, idempotency: str | None) -> None:
        """Remove a run that was never started (its first message could not be sent)."""
        digests = self.guard(lambda: self.client.smembers(blobs_key(run_id)))
        indexed = self.get_run_fields(run_id, "workflowType", "status", "correlationId")
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(run_key(run_id), refs_key(run_id), vars_key(run_id), dynamic_key(run_id),
                    blobs_key(run_id), *(blob_key(run_id, str(d)) for d in digests))
        self.unindex_pipe(pipe, run_id, indexed)
        pipe.srem(f"{definition_key(digest)}:runs", run_id)
        if idempotency:
            pipe.delete(idempotency_key(idempotency))
        self.execute(pipe)

    def release_idempotency_key(self, key: str, run_id: str) -> bool:
        """Forget that idempotency key `key` names `run_id`, if it still does (True then)."""
        name = idempotency_key(key)

        def release() -> bool:
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(name)  # type: ignore[no-untyped-call]
                    if pipe.get(name) != run_id:
                        return False
                    pipe.multi()
                    pipe.delete(name)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    return False

        return bool(self.guard(release))

    def get_run(self, run_id: str) -> dict[str, str] | None:
        fields = self.guard(lambda: self.client.hgetall(run_key(run_id)))
        return self._unstash(run_id, [fields])[0] or None

    def get_status(self, run_id: str) -> str | None:
        value = self.guard(lambda: self.client.hget(run_key(run_id), "status"))
        return str(value) if value is not None else None

    def get_run_fields(self, run_id: str, *names: str) -> dict[str, str]:
        """The named fields of a run's record (missing ones are left out)."""
        values = self.guard(lambda: self.client.hmget(run_key(run_id), list(names)))
        found = {name: str(v) for name, v in zip(names, values, strict=True) if v is not None}
        return self._unstash(run_id, [found])[0]

    def get_definition(self, digest: str) -> str | None:
        value = self.guard(lambda: self.client.get(definition_key(digest)))
        return str(value) if value is not None else None

    def recorded_refs(self, run_id: str) -> set[str]:
        """The refs of every step the run has a record of."""
        return {str(ref) for ref in self.guard(lambda: self.client.smembers(refs_key(run_id)))}

    def get_steps(self, run_id: str) -> dict[str, dict[str, str]]:
        return self.get_step_records(run_id, sorted(self.recorded_refs(run_id)))

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
        self._unstash(run_id, [run, *records])
        found = {ref: rec for ref, rec in zip(refs, records, strict=True) if rec}
        return run, variables, found

    def _unstash(self, run_id: str, records: list[dict[str, str]]) -> list[dict[str, str]]:
        """Put back, in place, the payloads the records hold by digest (lua/lib.lua `stash`);
        one more round trip, only when a record holds one."""
        stashed = [(record, name, value[1:]) for record in records
                   for name, value in record.items()
                   if name in _PAYLOAD_FIELDS and value.startswith(_STASH_MARK)]
        if not stashed:
            return records
        pipe = self.client.pipeline(transaction=False)
        for _, _, digest in stashed:
            pipe.get(blob_key(run_id, digest))
        for (record, name, _), text in zip(stashed, self.execute(pipe), strict=True):
            record[name] = str(text) if text is not None else ""
        return records

    def define_branches(self, run_id: str, fork_ref: str,
                        steps: Mapping[str, Mapping[str, Any]]) -> tuple[str, str] | None:
        """Keep the steps a dynamic fork defines at run time (ref -> {name, input}).

        Returns (ref, holder) and writes nothing when a ref is another fork's branch or a
        step the run has recorded.
        """
        flat: list[str] = []
        for ref, step in steps.items():
            flat += [ref, dumps({**step, "fork": fork_ref})]
        reply = self.call("define_branches", [run_key(run_id)],
                          [fork_ref, self.retention, *flat])
        return (str(reply[1]), str(reply[2])) if str(reply[0]) == "taken" else None

    def get_dynamic_step(self, run_id: str, ref: str) -> Any:
        value = self.guard(lambda: self.client.hget(dynamic_key(run_id), ref))
        return json.loads(value) if value else None

    def get_variables(self, run_id: str) -> dict[str, str]:
        return dict(self.guard(lambda: self.client.hgetall(vars_key(run_id))))

    def set_variables(self, run_id: str, variables: Mapping[str, Any]) -> None:
        """Set run variables (each name holds one JSON value; parallel writers do not clash)."""
        if not variables:
            return
        flat: list[str] = []
        for name, value in variables.items():
            flat += [name, dumps(value)]
        self.call("write_hash", [run_key(run_id), vars_key(run_id)], [self.retention, *flat])

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

        A PAUSED run ends so when it is resumed. A run asked to COMPLETE after a permissive
        step failed ends FAILED instead.
        """
        args = [now_ms(), self.retention, status, dumps(output), reason, failed_ref,
                ROUTE_ROOT.get()]
        return self._ended(self.call("end_run", [run_key(run_id)], args), run_id)

    def complete_run(self, run_id: str, output: Any) -> bool:
        """Mark a RUNNING run COMPLETED with its output (FAILED for a RefusedOutput); False
        if it had already ended."""
        if isinstance(output, RefusedOutput):
            return self.end_run(run_id, RunStatus.FAILED, output.output, reason=output.reason)
        return self.end_run(run_id, RunStatus.COMPLETED, output)

    def add_run_output(self, run_id: str, status: str, name: str, value: Any) -> bool:
        """Set `name` in the output of a run that ended with `status`; False if the run is
        no longer so ended (reopened, ended again) or its output is not a JSON object.

        Checked and written in one script against what was read, so a concurrent retry,
        rerun or output write is never overwritten; a lost race is read again.
        """
        for _ in range(5):
            state, ended, recorded = self.guard(lambda: self.client.hmget(
                run_key(run_id), ["status", "endTime", "output"]))
            if state != status:
                return False
            text = self._unstash(run_id, [{"output": recorded or ""}])[0]["output"]
            output = json.loads(text) if text else None
            if output is None:
                output = {}
            if not isinstance(output, dict):
                return False
            args = [self.retention, status, ended or "", recorded or "",
                    dumps({**output, name: value})]
            if self.call("add_run_output", [run_key(run_id)], args):
                return True
        return False

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
        slot: SlotAsk | None = None,
    ) -> Claim:
        """Atomically mark a step IN_PROGRESS and read what its input resolves from; take
        its flow-limit `slot` too when that is free for the asking (Claim.slot_taken)."""
        deps = list(dependencies)
        keys = [run_key(run_id), step_key(run_id, ref), vars_key(run_id)]
        keys += [step_key(run_id, dep) for dep in deps]
        args = [ref, now_ms(), worker, task_id, max_deliveries, task_type, name,
                "1" if reads_run else "0", ROUTE_ROOT.get(), SCHEDULED_AT.get() or ""]
        if slot is not None:
            args.append(slot.term)
        SCHEDULED_AT.set(0)  # the later steps of a fused message start as the one before ends
        reply = self.call("claim_step", keys, args)
        taken = reply[0] == "slot"  # run, holding the slot asked for
        verdict = ClaimVerdict.RUN if taken else ClaimVerdict(str(reply[0]))
        if verdict is ClaimVerdict.DONE:
            # the output lets a control step that had completed send its route again
            return Claim(verdict, str(reply[1]), {}, {ref: {"output": str(reply[2])}})
        if verdict is not ClaimVerdict.RUN:
            return Claim(verdict, str(reply[1]) if len(reply) > 1 else None, {}, {})
        run, variables = pairs(reply[2]), pairs(reply[3])
        found = {dep: pairs(rec) for dep, rec in zip(deps, reply[4:], strict=True) if rec}
        return Claim(verdict, None, run, found, attempts=int(reply[1]), variables=variables,
                     slot_taken=taken)

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
        status: str = StepStatus.COMPLETED,
        error: Mapping[str, Any] | None = None,
        expect: StepStatus | None = None,
        cached: bool = False,
        parked: str = "",
        slot: SlotFree | None = None,
    ) -> bool | None:
        """Record a step's input and output; with `final`, complete the run in the same call.

        `alias` is a second ref the record is copied to (a loop step's unsuffixed ref).
        `cached` marks an output taken from the output cache (the step did not run);
        `parked` is a waiting step's parked route, recorded with its output. A `slot`
        taken in the claim is given back in the same call, whatever else happens.
        With `expect`, the step is completed only if it has that status: None when it has
        not (another caller completed it first). Returns True when this call ended the run.
        A RefusedOutput as `run_output` ends the run FAILED with its reason.
        """
        key = step_key(run_id, ref)
        keys = [run_key(run_id), key, step_key(run_id, alias) if alias else key]
        refused = run_output if isinstance(run_output, RefusedOutput) else None
        if refused is not None:
            run_output = refused.output
        ending = dumps(run_output) if final else ""
        given_error = dumps(error) if error else ""
        # the run's recorded bytes are capped here, where every output is recorded
        args = [now_ms(), self.retention, dumps(input), dumps(output), ending, status,
                given_error, expect or "", alias or "", ROUTE_ROOT.get(),
                get_settings().max_run_bytes, ref, refused.reason if refused else "",
                "1" if cached else "", parked]
        if slot is not None:
            args += [slot.key, slot.holder]
        reply = self.call("complete_step", keys, args)
        if slot is not None and isinstance(reply, list) and reply[:1] == ["slot"]:
            _, reply = reply
            slot.others_wait = True
        if reply == -1:
            return None
        return self._ended(reply, run_id)

    def retry_step(self, run_id: str, ref: str, *, error: Mapping[str, Any], input: Any,
                   expect: str = "") -> bool:
        """Record a failed attempt that will be tried again; the delivery count starts anew.

        With `expect`, only if the step has that status. False when nothing was written.
        """
        reason = f"{error.get('type')}: {error.get('message')}"
        keys = [run_key(run_id), step_key(run_id, ref)]
        args = [now_ms(), self.retention, dumps(error), dumps(input), reason, ROUTE_ROOT.get(),
                expect]
        return bool(self.call("retry_step", keys, args))

    def get_attempts(self, run_id: str, refs: Sequence[str]) -> dict[str, list[Any]]:
        """The failed attempts of the named steps, oldest first, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for ref in refs:
            pipe.lrange(attempts_key(run_id, ref), 0, -1)
        found = self.execute(pipe)
        return {ref: [json.loads(a) for a in items] for ref, items in zip(refs, found,
                                                                         strict=True)}

    def record_step(self, run_id: str, ref: str, fields: Mapping[str, str], *,
                    expect_output: str | None = None) -> bool:
        """Write fields of a step record that no claim of its own writes (a fork before its
        join, a loop's progress); False when the run is gone.

        With `expect_output`, only if the step's output is still that text (False if not).
        """
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value]
        keys = [run_key(run_id), step_key(run_id, ref)]
        guard = ["1", expect_output] if expect_output is not None else ["0", ""]
        return bool(self.call("record_step", keys, [self.retention, ref, *guard, *flat]))

    def fail_step(
        self,
        run_id: str,
        ref: str,
        *,
        error: Mapping[str, Any],
        input: Any = None,
        step_status: str = StepStatus.FAILED,
        run_status: str = RunStatus.FAILED,
        message: Mapping[str, Any] | None = None,
        root: str | None = None,
        reason: str | None = None,
        expect: StepStatus | None = None,
    ) -> bool:
        """Record a step's failure and end its run with it; False if the run had ended.

        With `run_status=""` the run goes on (a permissive step) but cannot complete.
        A PAUSED run ends when it is resumed. `root` fences the write in place of the
        running task's route root (ROUTE_ROOT). `reason` replaces the one made of the error.
        With `expect`, only a step in that status fails (a timed-out one keeps its status).
        """
        reason = reason or f"{error.get('type', 'Error')}: {error.get('message', '')}"
        keys = [run_key(run_id), step_key(run_id, ref)]
        given = dumps(input) if input is not None else ""
        args = [now_ms(), self.retention, step_status, dumps(error), reason, ref, run_status]
        args += [given, dumps(message) if message else "",
                 ROUTE_ROOT.get() if root is None else root, expect or ""]
        return self._ended(self.call("fail_step", keys, args), run_id)

    def open_runs(self) -> list[str]:
        """Ids of every run that is RUNNING or PAUSED, newest first (a scan of the index)."""
        ids = [str(i) for i in self.guard(lambda: self.client.zrevrange(RUNS_INDEX, 0, -1))]
        pipe = self.client.pipeline(transaction=False)
        for run_id in ids:
            pipe.hget(run_key(run_id), "status")
        statuses = self.execute(pipe)
        return [run_id for run_id, status in zip(ids, statuses, strict=True)
                if status in OPEN_RUN_STATUSES]

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
            {"workflowId": str(run_id), **self._unstash(str(run_id), [record])[0]}
            for run_id, record in zip(ids, records, strict=True)
            if record
        ]
