"""Process-wide handles: the run store for the configured Redis, and the plan cache.

Plans are immutable and content-addressed, so a worker builds each definition's plan
once and keeps it; the definition itself is read from Redis by digest on first use.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from functools import lru_cache

from app.compiler.plan import Plan, build_plan
from app.config import get_settings
from app.dsl.validate import parse_definition
from app.errors import BatonError
from app.store import Ended, RunStore, connect

_PLAN_CACHE_SIZE = 256


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


class _PlanCache:
    def __init__(self, size: int) -> None:
        self._plans: OrderedDict[str, Plan] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, digest: str) -> Plan:
        with self._lock:
            plan = self._plans.get(digest)
            if plan is not None:
                self._plans.move_to_end(digest)
                return plan
        text = get_store().get_definition(digest)
        if text is None:
            raise PlanMissing(f"definition {digest} is not in the store (expired?)")
        # validated at submit; transformation names are not re-checked on a worker
        plan = build_plan(parse_definition(json.loads(text)), validated=True)
        self.put(plan)
        return plan

    def put(self, plan: Plan) -> None:
        with self._lock:
            self._plans[plan.digest] = plan
            self._plans.move_to_end(plan.digest)
            while len(self._plans) > self._size:
                self._plans.popitem(last=False)


plans = _PlanCache(_PLAN_CACHE_SIZE)
