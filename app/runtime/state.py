"""Process-wide handles: the run store for the configured Redis, and the plan cache.

Plans are immutable and content-addressed, so a worker builds each definition's plan
once and keeps it; the definition itself is read from Redis by digest on first use. The
cache is bounded by memory, not by count: one plan of a 10,000-task definition weighs as
much as thousands of small ones. A plan heavier than a quarter of the cache is also kept in
Redis in pieces (app.compiler.pieces), and a worker reads those instead of the definition:
their outline weighs a few hundred bytes a task, and the steps' specs are read one by one.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from app.compiler.pieces import SPECS_KEPT, Read, assemble, cut
from app.compiler.plan import Plan, build_plan
from app.config import get_settings
from app.dsl.model import WorkflowDef
from app.errors import BatonError, StoreUnavailable
from app.gc_pause import without_gc
from app.store import Ended, RunStore, connect

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
# What a plan costs in memory, measured with tracemalloc (plans of 100 to 5,000 tasks:
# chains with expressions, wide forks, tasks with 2 KB of static input): about 3.5 KB
# per task (the parsed definition, its step specs and parsed inputs) plus about one byte
# per byte of the definition's JSON (its static values). The estimate is within 15% of
# the measure for each shape, erring high; the JSON length alone is off by 2.6x to 31x.
_BYTES_PER_TASK = 3600
# What a plan assembled from pieces costs: its outline (stages, controls, the set of refs),
# measured the same way on chains and chained forks of 20,000 to 100,000 tasks, plus the
# specs it keeps built.
_OUTLINE_BYTES_PER_TASK = 400
# A plan heavier than this share of the cache's budget is stored in pieces too: kept whole,
# it would push most others out.
_PIECES_SHARE = 4


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


def outline_weight(plan: Plan) -> int:
    """An estimate of the memory a plan assembled from pieces holds, in bytes."""
    return _OUTLINE_BYTES_PER_TASK * len(plan.steps) + _BYTES_PER_TASK * SPECS_KEPT


def _budget() -> int:
    return get_settings().plan_cache_mib * _MIB


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
        outline = get_store().get_plan_outline(digest)
        if outline is not None:
            plan = assemble(digest, outline, self._reader(digest))
            self.put(plan, outline_weight(plan))
            return plan
        plan, document, size = _built(digest)
        self.put(plan, plan_weight(plan, size), document=document)
        return plan

    def put(self, plan: Plan, weight: int | None = None, *,
            document: Mapping[str, Any] | None = None) -> None:
        """Keep a plan; one heavier than the whole budget is used by its caller, not kept.

        With its definition's `document`, a plan heavier than a share of the budget is stored
        in pieces too, for every process that needs it later.
        """
        weight = plan_weight(plan) if weight is None else weight
        budget = _budget()
        if document is not None and weight > budget // _PIECES_SHARE:
            _store_pieces(plan, document)
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

    @staticmethod
    def _reader(digest: str) -> Read:
        """Reads a plan's pieces; ones that expired (a run idle past the retention) are
        written again from the definition first."""

        def read(names: Sequence[str]) -> list[str]:
            found = get_store().get_plan_pieces(digest, names)
            if None in found:
                _store_pieces(*_built(digest)[:2])
                found = get_store().get_plan_pieces(digest, names)
            if None in found:
                raise PlanMissing(f"plan {digest} has no piece {names[found.index(None)]!r}")
            return [text for text in found if text is not None]

        return read


def _store_pieces(plan: Plan, document: Mapping[str, Any]) -> None:
    """Store a plan in pieces, unless they are there (then their retention starts again).

    The pieces are a copy of the definition: when Redis cannot take them now, the run goes on
    (its record is written already) and the first worker that misses them writes them.
    """
    store = get_store()
    try:
        if not store.keep_plan_pieces(plan.digest):
            store.put_plan_pieces(plan.digest, *cut(plan, document))
    except StoreUnavailable as exc:
        log.warning("plan %s is not stored in pieces: %s", plan.digest, exc)


def _built(digest: str) -> tuple[Plan, dict[str, Any], int]:
    """(plan, the definition's JSON document, its size in bytes) built from the store."""
    text = get_store().get_definition(digest)
    if text is None:
        raise PlanMissing(f"definition {digest} is not in the store (expired?)")
    document = json.loads(text)
    # validated at submit: neither its shape nor its transformation names are checked
    # again on a worker, only read into the model
    plan = build_plan(_read_validated(document), validated=True, digest=digest)
    return plan, document, len(text.encode())


_read_validated = without_gc(WorkflowDef.model_validate)

plans = _PlanCache()
