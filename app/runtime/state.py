"""Process-wide handles: the run store for the configured Redis, and the plan cache.

Plans are immutable and content-addressed, so a worker builds each definition's plan
once and keeps it; the definition itself is read from Redis by digest on first use. The
cache is bounded by memory, not by count: one plan of a 10,000-task definition weighs as
much as thousands of small ones.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from functools import lru_cache

from app.compiler.plan import Plan, build_plan
from app.config import get_settings
from app.dsl.model import WorkflowDef
from app.errors import BatonError
from app.gc_pause import without_gc
from app.store import Ended, RunStore, connect

_MIB = 1024 * 1024
# What a plan costs in memory, measured with tracemalloc (plans of 100 to 5,000 tasks:
# chains with expressions, wide forks, tasks with 2 KB of static input): about 3.5 KB
# per task (the parsed definition, its step specs and parsed inputs) plus about one byte
# per byte of the definition's JSON (its static values). The estimate is within 15% of
# the measure for each shape, erring high; the JSON length alone is off by 2.6x to 31x.
_BYTES_PER_TASK = 3600


@lru_cache(maxsize=1)
def get_store() -> RunStore:
    """The run store on REDIS_URL (connections are made lazily, per process)."""
    settings = get_settings()
    return RunStore(connect(settings.redis_url), settings.retention_seconds, _run_ended)


def _run_ended(ended: Ended) -> None:
    from app.runtime.endings import run_ended  # it starts runs, which need this module

    run_ended(ended)


class PlanMissing(BatonError):
    """Raised when a run's definition is no longer in the store (it expired)."""


def plan_weight(plan: Plan, definition_bytes: int | None = None) -> int:
    """An estimate of the memory a plan holds, in bytes (see _BYTES_PER_TASK)."""
    if definition_bytes is None:
        definition_bytes = len(json.dumps(plan.definition.to_json_dict(),
                                          separators=(",", ":")).encode())
    return _BYTES_PER_TASK * len(plan.steps) + definition_bytes


class _PlanCache:
    """Digest -> plan, least recently used first out past the budget (plan_cache_mib)."""

    def __init__(self) -> None:
        self._plans: OrderedDict[str, tuple[Plan, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()
        # Every plan still referenced somewhere in the process, kept or not: a plan over the
        # budget is found again while its run's submit or step still holds it, instead of
        # being read and built anew by each call that asks for it (the router, operators).
        self._alive: weakref.WeakValueDictionary[str, Plan] = weakref.WeakValueDictionary()

    def __len__(self) -> int:
        return len(self._plans)

    @property
    def weight(self) -> int:
        """The estimated bytes of the plans kept."""
        return self._weight

    def get(self, digest: str) -> Plan:
        with self._lock:
            kept = self._plans.get(digest)
            if kept is not None:
                self._plans.move_to_end(digest)
                return kept[0]
            alive = self._alive.get(digest)
            if alive is not None:
                return alive
        text = get_store().get_definition(digest)
        if text is None:
            raise PlanMissing(f"definition {digest} is not in the store (expired?)")
        # validated at submit: neither its shape nor its transformation names are checked
        # again on a worker, only read into the model
        plan = build_plan(_read_validated(json.loads(text)), validated=True)
        self.put(plan, plan_weight(plan, len(text.encode())))
        return plan

    def put(self, plan: Plan, weight: int | None = None) -> None:
        """Keep a plan; one heavier than the whole budget is used by its caller, not kept."""
        weight = plan_weight(plan) if weight is None else weight
        budget = get_settings().plan_cache_mib * _MIB
        with self._lock:
            self._alive[plan.digest] = plan
            old = self._plans.pop(plan.digest, None)
            if old is not None:
                self._weight -= old[1]
            if weight > budget:
                return
            self._plans[plan.digest] = (plan, weight)
            self._weight += weight
            while self._weight > budget:
                _, (_, dropped) = self._plans.popitem(last=False)
                self._weight -= dropped


_read_validated = without_gc(WorkflowDef.model_validate)

plans = _PlanCache()
