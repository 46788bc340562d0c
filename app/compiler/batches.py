"""Wide forks send their one-step branches in batches, several to a message.

Each branch of a fork is a message of its own, so that branches run in parallel. Beyond
what the workers run at once, more messages buy no parallelism: each costs a broker round
trip, a queue wait and the worker's bookkeeping around it. So a fork spreads its branches
over at most `BATON_FORK_SPREAD` messages: a fork of N branches, N above the spread, puts
ceil(N / spread) branches in a message; up to the spread, every branch keeps a message of
its own, exactly as before.

Only what fusion would put in one message is batched (app.compiler.fusion): a branch of
one step of a registered transformation with no per-message limit or routing, with
others of the same task (`fusion_key`), under the same switches (BATON_FUSE_STEPS, the
workflow's `metadata.baton.fuseSteps`). A batch message is its first branch's signature
with the refs of the others in its `fused` keyword argument; the step runner runs them one
after the other (app.runtime.fusion.run_fused), each claimed, recorded, retried, timed
out and held back on its own, under its own ref. A dynamic fork's branch, whose spec is
not in the plan, is run by the message's own task and its spec read from the run, as in a
message of its own. The batch message is one member of the fork's chord: the chord counts
one member per batch, and the JOIN runs once every batch has ended.

When a branch of a batch...

- fails and is retried: the retry is the message from that branch on (the runner rewrote
  the request to start there), sent after the retry delay; the branches after it in the
  batch wait for that delay and run in the retry. The batch's first message raised Retry
  and is not counted; its retry is, once: the chord counts each batch exactly once.
  Branches before it are done and stay done. (Running the later branches first would need
  a second message for them, and the chord would count the batch twice.)
- fails for good: the run fails and the message ends there, uncounted, as a failed
  branch's own message does (`retry` sends it again from that branch on).
- is killed with its worker: the message is delivered again whole; the branches done
  before find their claims completed and do not run again, the killed one runs again
  (a delivery of its own, counted against BATON_MAX_DELIVERIES), then the rest.
- finds its run paused: the message from that branch on is held back and sent on by
  `resume`, still one member of the chord. Cancelled or timed out: it is dropped, as
  every message of such a run is.

Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from celery.canvas import Signature

from app.compiler.fusion import FUSED
from app.config import get_settings


@dataclass(frozen=True)
class Member:
    """One branch of a fork as the batching sees it."""

    signature: Signature
    """The branch's route (its own, not shared: a batch takes the first's)."""
    weight: int
    """Bytes the route weighs (app.compiler.weights)."""
    key: str | None
    """The branch's fusion key if it is one step that may share a message, else None."""


@dataclass
class _Batch:
    signature: Signature
    weight: int
    refs: list[str] = field(default_factory=list)


def batch_size(width: int) -> int:
    """How many branches of a fork of `width` share a message (1: one message each)."""
    spread = get_settings().fork_spread
    return 1 if width <= spread else -(-width // spread)


def batched(members: Iterable[Member], width: int, budget: int) -> list[Signature]:
    """The fork's chord members: `members` (of a fork of `width` branches) with those of
    one key put in batches of `batch_size(width)`, each within `budget` bytes, at the place
    of its first branch."""
    size = batch_size(width)
    if size == 1:
        return [member.signature for member in members]
    sent: list[Signature] = []
    open_batches: dict[str, _Batch] = {}
    for member in members:
        if member.key is None:
            sent.append(member.signature)
            continue
        ref = str(member.signature.args[1])
        added = len(json.dumps(ref)) + 2
        batch = open_batches.get(member.key)
        if batch is not None and len(batch.refs) + 1 < size \
                and batch.weight + added <= budget:
            batch.refs.append(ref)
            batch.weight += added
            continue
        batch = open_batches[member.key] = _Batch(member.signature, member.weight)
        sent.append(member.signature)
        # the list the message carries: refs appended later land in it
        member.signature.kwargs[FUSED] = batch.refs
    return [_unbatched_alone(signature) for signature in sent]


def _unbatched_alone(signature: Signature) -> Signature:
    """A batch left with its first branch only is that branch's own message."""
    if signature.kwargs.get(FUSED) == []:
        del signature.kwargs[FUSED]
    return signature
