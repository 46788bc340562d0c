"""Plain values the run store hands out: a claim, the end of a run, a held-back message."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from app.store.status import ClaimVerdict, RunStatus


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Claim:
    """The answer to a step's claim: what to do, and the state to resolve its input from."""

    verdict: ClaimVerdict
    detail: str | None
    run: dict[str, str]
    dependencies: dict[str, dict[str, str]]
    attempts: int = 0
    """Attempts of this step so far, this one included."""
    variables: dict[str, str] | None = None
    """The run's variables, one JSON value per name."""
    slot_taken: bool = False
    """The step took its flow limit's slot in this claim (SlotAsk)."""


@dataclass(frozen=True)
class SlotAsk:
    """A step's flow-limit slot, asked for in its claim: taken there when its limit has no
    key, none waits, a slot is free and a start is due (else the limit's own scripts).
    The holder is `<run>|<ref>|<attempt>`, which the claim names itself. One per limit and
    lease, not per step: what the claim is sent is `term`."""

    key: str
    """The limit's key in Redis (app.store.limits.limit_keys(...)[0])."""
    lease_ms: int
    concurrency: int
    interval_ms: int

    @cached_property
    def term(self) -> str:
        """One argument for the claim (lua/lib.lua take_slot): each argument costs the
        client as much to write as a field of the step's record."""
        return f"{self.lease_ms} {self.concurrency} {self.interval_ms} {self.key}"


@dataclass
class SlotFree:
    """A slot taken in the claim, given back with the step's output."""

    key: str
    holder: str
    others_wait: bool = False
    """Set by the call that gave it back: others wait for it, hand it on."""


@dataclass(frozen=True)
class Ended:
    """A run that one of the store's calls has just ended."""

    run_id: str
    status: RunStatus
    reason: str
    parent_id: str
    """The run whose SUB_WORKFLOW step started this one ('' for none)."""
    parent_ref: str
    root: str
    """Root of the route the run was started on (the parent's, for a child)."""

    @classmethod
    def from_reply(cls, run_id: str, reply: Sequence[Any]) -> Ended:
        _, status, parent, parent_ref, reason, root = (str(part) for part in reply)
        return cls(run_id, RunStatus(status), reason, parent, parent_ref, root)


@dataclass(frozen=True)
class RefusedOutput:
    """A run's output that ends the run FAILED, with `reason`, where it would complete (it
    breaks the workflow's outputSchema); the run keeps the output."""

    output: Any
    reason: str


def pairs(flat: Sequence[Any]) -> dict[str, str]:
    it = iter(flat)
    return {str(k): str(v) for k, v in zip(it, it, strict=True)}


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
