"""Flow limits in Redis: slots, start tokens, leases and the messages waiting for them.

Each limit (a transformation's name, and its key's value when it has a key) keeps its
holders with a lease, the messages handed a slot but not yet started, the messages
waiting in line, and its rate's next start (GCRA). Every change is one script of
`lua/limit_*.lua`, run with Redis's clock; a limit's keys share a hash tag. The messages
are opaque JSON here: the runtime captures and sends them (app.runtime.limits).
Knows nothing of Celery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Final

import redis

from app.config import get_settings
from app.store.base import StoreBase
from app.store.keys import PREFIX, run_key, step_key

LIMITS_INDEX: Final = f"{PREFIX}:limits"
"""Sorted set of the ids of the limits steps have asked, by when one last waited or held a
slot (for `baton limits`, and for the slots of a run that ended)."""
_SCRIPTS: Final = ("limit_acquire", "limit_expire", "limit_release", "limit_renew")


@lru_cache(maxsize=4096)
def limit_key(limit_id: str) -> str:
    """The key of a limit's meta hash, which its other keys are named from."""
    tag = limit_id.replace("{", "(").replace("}", ")")
    return f"{PREFIX}:limit:{{{tag}}}"


def limit_keys(limit_id: str) -> list[str]:
    """The keys of one limit, in the order every limit script takes them."""
    base = limit_key(limit_id)
    return [base, f"{base}:holders", f"{base}:handed", f"{base}:waiting", f"{base}:parked",
            LIMITS_INDEX]


@cache
def _source(name: str) -> str:
    folder = resources.files("app.store") / "lua"
    return (folder / "limit_lib.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


@dataclass(frozen=True)
class Asked:
    """What a step's limit answered (see LimitStore.acquire)."""

    verdict: str
    """'run', 'full' (ask again with the message to park), 'parked' or 'duplicate'."""
    timer_ms: int
    """When a timer should look at the limit again (epoch ms, Redis's clock); 0: none."""
    send: list[str]
    """Messages (JSON) handed a slot by this call, for the caller to send."""


@dataclass(frozen=True)
class StepClaim:
    """The claim of a step asking its limit: undone if its message is parked."""

    run_id: str
    ref: str
    task_id: str
    waiting_on: str


@dataclass(frozen=True)
class Released:
    timer_ms: int
    send: list[str]


@dataclass(frozen=True)
class LimitState:
    """One limit as `baton limits` shows it."""

    id: str
    name: str
    key: str
    concurrency: int
    interval_ms: int
    in_use: int
    waiting: int


def _idle_ms() -> int:
    """How long a keyed limit left idle is kept (limit_lib.lua keep_while_used)."""
    return int(get_settings().limit_idle_seconds * 1000)


class LimitStore:
    """The flow limits' scripts, on the run store's client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._scripts = {name: client.register_script(_source(name)) for name in _SCRIPTS}

    def _call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._scripts[name]
        return StoreBase.guard(lambda: script(keys=keys, args=args))

    def acquire(
        self, limit_id: str, holder: str, message: str, *, lease_ms: int, concurrency: int,
        interval_ms: int, name: str, key: str, ticket: bool, hold_ms: int | None = None,
        step: StepClaim | None = None,
    ) -> Asked:
        """Take a slot (and a start) for `holder`, or park `message` in line for one; with
        no message ('') nothing is parked: 'full' says to ask again with it. A slot taken
        is held `hold_ms` (default: `lease_ms`, renewed while its step runs). A `step`
        whose message is parked is put back as before its claim (`unclaim`, limit_lib.lua).
        """
        keys = limit_keys(limit_id)
        args = [holder, message, lease_ms, concurrency, interval_ms, name, key,
                "1" if ticket else "0", limit_id, "" if hold_ms is None else str(hold_ms),
                _idle_ms()]
        if step is not None:
            keys.append(step_key(step.run_id, step.ref))
            args += [step.task_id, step.waiting_on]
        reply = self._call("limit_acquire", keys, args)
        return Asked(str(reply[0]), int(reply[1]), [str(m) for m in reply[2:]])

    def release(self, limit_id: str, holder: str, *, lease_ms: int,
                timer_ms: int | None = None, ticket: bool = False,
                withdraw: bool = False) -> Released:
        """Give `holder`'s slot back ('' for none) and hand what is free to waiting messages;
        `timer_ms` is the due time of the timer that calls (it is then no longer pending);
        `ticket`: the holder was handed its slot and its step may not have started;
        `withdraw`: it leaves the line too, if it waits there."""
        reply = self._call("limit_release", limit_keys(limit_id), [
            holder, lease_ms, "" if timer_ms is None else str(timer_ms),
            "1" if ticket else "0", "1" if withdraw else "0", _idle_ms()])
        return Released(int(reply[0]), [str(m) for m in reply[1:]])

    def renew(self, limit_id: str, holders: Iterable[str], *, lease_ms: int) -> None:
        """Extend the leases of holders still running (not those reaped meanwhile)."""
        keys = limit_keys(limit_id)
        self._call("limit_renew", [keys[1], keys[5]], [lease_ms, limit_id, *holders])

    def holders_of(self, prefix: str) -> dict[str, list[str]]:
        """The holders whose id starts with `prefix` (a run's: `<run id>|`), by limit. Reads
        every limit's holders: for the end of a run from outside, not for each step."""
        ids = self._ids()
        pipe = self.client.pipeline(transaction=False)
        for limit_id in ids:
            pipe.zrange(limit_keys(limit_id)[1], 0, -1)
        replies = StoreBase.guard(pipe.execute)
        found = {limit_id: [h for h in holders if h.startswith(prefix)]
                 for limit_id, holders in zip(ids, replies, strict=True)}
        return {limit_id: holders for limit_id, holders in found.items() if holders}

    def expire(self, limit_id: str, holders: Sequence[str], *, grace_ms: int) -> int:
        """End these holders' leases within `grace_ms`; returns when a timer is due (0: none)."""
        reply = self._call("limit_expire", limit_keys(limit_id), [grace_ms, *holders])
        return int(reply[0])

    def started(self, run_id: str, ref: str) -> None:
        """A step that waited on a limit runs now, or waits on its run: not on the limit."""
        StoreBase.guard(lambda: self.client.hdel(step_key(run_id, ref), "waitingOn"))

    def run_waits(self, run_id: str, waiting_on: str) -> None:
        """A run waits for a slot of its workflow's limit before its first step."""
        StoreBase.guard(lambda: self.client.hset(run_key(run_id), "waitingOn", waiting_on))

    def run_started(self, run_id: str) -> None:
        StoreBase.guard(lambda: self.client.hdel(run_key(run_id), "waitingOn"))

    def run_statuses(self, run_ids: Sequence[str]) -> list[str | None]:
        """The status of each run (None: no record, it expired)."""
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hget(run_key(run_id), "status")
        return [None if s is None else str(s) for s in StoreBase.guard(pipe.execute)]

    def holders(self, limit_id: str) -> list[str]:
        """The holders of one limit's slots now."""
        key = limit_keys(limit_id)[1]
        return [str(h) for h in StoreBase.guard(lambda: self.client.zrange(key, 0, -1))]

    def _ids(self) -> list[str]:
        return sorted(StoreBase.guard(lambda: self.client.zrange(LIMITS_INDEX, 0, -1)))

    def states(self) -> list[LimitState]:
        """Every limit a step has asked, with its use and its line."""
        ids = self._ids()
        pipe = self.client.pipeline(transaction=False)
        for limit_id in ids:
            meta, holders, _, waiting, _, _ = limit_keys(limit_id)
            pipe.hmget(meta, "name", "key", "concurrency", "interval")
            pipe.zcard(holders)
            pipe.zcard(waiting)
        replies = StoreBase.guard(pipe.execute)
        states = []
        for index, limit_id in enumerate(ids):
            (name, key, concurrency, interval), in_use, waiting = replies[3 * index:3 * index + 3]
            if name is None and not in_use and not waiting:
                continue  # a keyed limit left idle, expired; its index entry goes later
            states.append(LimitState(limit_id, name or limit_id, key or "", int(concurrency or 0),
                                     int(interval or 0), int(in_use), int(waiting)))
        return states
