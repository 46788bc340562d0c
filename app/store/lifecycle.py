"""The run store's lifecycle calls: hold back, pause, resume, terminate, retry, reopen.

Each is one script that checks its precondition (the run's status) inside it, so two
callers racing on one run are ordered by Redis and exactly one of them wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.store.base import StoreBase
from app.store.keys import run_key, step_key
from app.store.records import dumps, now_ms
from app.store.status import OVER_RUN_STATUSES


@dataclass(frozen=True)
class Retried:
    """A failed run reopened at its failed step."""

    step_ref: str
    messages: list[dict[str, Any]]
    """The failed step's message, then the messages held back, to send again."""


class Lifecycle(StoreBase):
    """The lifecycle part of RunStore."""

    def hold_back(self, run_id: str, message: Mapping[str, Any]) -> int:
        """Keep a message of a run that is paused or ended: 1 kept, 2 the run is RUNNING
        again (send it on now), 0 the run is COMPLETED or gone."""
        return int(self.call("park", [run_key(run_id)], [self.retention, dumps(message)]))

    def ended_for_good(self, run_id: str) -> bool:
        """Whether a run is over for good (cancelled, timed out): one read."""
        status = self.guard(lambda: self.client.hget(run_key(run_id), "status"))
        return status in OVER_RUN_STATUSES

    def switch_status(self, run_id: str, was: str,
                      becomes: str) -> list[dict[str, Any]] | None:
        """Move a run from one status to another (pause, resume); None if it was not `was`.

        Returns the messages it had held back, to send on; none when a resumed run ended at
        once with what was asked while it was paused (`on_end` has been told).
        """
        reply = self.call("switch_status", [run_key(run_id)],
                          [was, becomes, now_ms(), self.retention])
        if reply is None:
            return None
        if str(reply[0]) == "ended":
            self._ended(reply[1], run_id)
            return []
        return [json.loads(message) for message in reply[1]]

    def terminate(self, run_id: str, status: str, reason: str) -> list[str] | None:
        """End an open run (TERMINATED, TIMED_OUT) and cancel its open steps.

        Returns the Celery task ids of the steps it cancelled, or None if it was not open.
        """
        reply = self.call("terminate", [run_key(run_id)],
                          [now_ms(), reason, status, self.retention])
        if reply is None:
            return None
        self._ended(reply[0], run_id)
        return [str(task_id) for task_id in reply[1] if task_id]

    def time_out_step(
        self, run_id: str, ref: str, *, reason: str, task_type: str, name: str,
        root: str = "", start_ms: int | None = None, alias: str | None = None,
    ) -> list[str] | None:
        """Record a waiting step TIMED_OUT and end its run TIMED_OUT, cancelling its other
        open steps (a paused run ends when resumed); None when the step had ended first, or
        the run. Returns the Celery task ids of the steps it cancelled."""
        error = dumps({"type": "TimeoutError", "message": reason})
        keys = [run_key(run_id), step_key(run_id, ref), step_key(run_id, alias or ref)]
        args = [now_ms(), self.retention, ref, reason, error, root, task_type, name,
                "" if start_ms is None else start_ms, alias or ""]
        reply = self.call("time_out_step", keys, args)
        if not reply:
            return None
        self._ended(reply[0], run_id)
        return [str(task_id) for task_id in reply[1] if task_id]

    def expire_step(
        self, run_id: str, ref: str, *, identity: str, sent_attempts: int | None,
        error: Mapping[str, Any], root: str, retry: bool, run_status: str = "",
        message: Mapping[str, Any] | None = None,
    ) -> bool:
        """Time out a step whose message (`identity`: task id and retries) expired unstarted:
        `retry` it (SCHEDULED; the caller sends the message again) or fail it TIMED_OUT and
        end its run with `run_status`. False when it did not act: the step started since
        (`sent_attempts`: its failed attempts when the message was sent), or this message's
        expiry was handled already."""
        keys = [run_key(run_id), step_key(run_id, ref)]
        args = [now_ms(), self.retention, ref, dumps(error), str(error.get("message", "")),
                root, identity, "" if sent_attempts is None else sent_attempts,
                "1" if retry else "", run_status, dumps(message) if message else ""]
        reply = self.call("expire_step", keys, args)
        if not reply:
            return False
        self._ended(reply[1], run_id)
        return True

    def retry_run(self, run_id: str) -> Retried | tuple[str, str]:
        """Reopen an ended run at its failed step; (why not, detail) when it cannot be."""
        reply = self.call("retry_run", [run_key(run_id)], [])
        verdict, detail = str(reply[0]), str(reply[1])
        if verdict != "ok":
            return verdict, detail
        messages = [json.loads(reply[2]), *(json.loads(m) for m in reply[3])]
        return Retried(detail, messages)

    def reopen_parent(self, parent_id: str, ref: str,
                      child_id: str) -> tuple[list[dict[str, Any]], str, str] | None:
        """Reopen a run that failed at the SUB_WORKFLOW step `ref` of child `child_id`.

        Returns (messages it held back, its own parent id, its parent's step ref), or None
        when it did not end there for that child.
        """
        reply = self.call("reopen_parent", [run_key(parent_id)], [ref, child_id])
        if str(reply[0]) != "ok":
            return None
        return [json.loads(m) for m in reply[1]], str(reply[2]), str(reply[3])

    def reopen(
        self,
        run_id: str,
        *,
        reset: Sequence[str],
        from_start: bool,
        new_input: Any = None,
        variables: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Start an ended run again: delete the records of `reset`, give it a new epoch.

        `from_start` also starts its variables (from `variables`) and dynamic steps anew.
        Returns the root id of its new route, or None if the run is not ended.
        """
        flat: list[str] = []
        for name, value in (variables or {}).items():
            flat += [name, dumps(value)]
        args = [now_ms(), "1" if from_start else "0",
                "" if new_input is None else dumps(new_input), len(reset), *reset, *flat]
        reply = self.call("reopen", [run_key(run_id)], args)
        return str(reply[1]) if str(reply[0]) == "ok" else None
