"""The run store: the one owner of runs, steps, definitions and events in Redis.

Nothing outside this package reads or writes those keys; every transition is one atomic
script of `lua/` behind a method of RunStore. No Celery here.
"""

from app.store.base import ROUTE_ROOT
from app.store.connection import connect
from app.store.records import Claim, Ended, RefusedOutput, now_ms
from app.store.status import (
    DONE_STEP_STATUSES,
    FAILED_STEP_STATUSES,
    OPEN_RUN_STATUSES,
    OPEN_STEP_STATUSES,
    OVER_RUN_STATUSES,
    ClaimVerdict,
    RunStatus,
    StepStatus,
)
from app.store.store import RunStore

__all__ = [
    # The store
    "RunStore", "ROUTE_ROOT", "connect",
    # Records
    "Claim", "Ended", "RefusedOutput", "now_ms",
    # Statuses
    "ClaimVerdict", "RunStatus", "StepStatus", "DONE_STEP_STATUSES", "FAILED_STEP_STATUSES",
    "OPEN_RUN_STATUSES", "OPEN_STEP_STATUSES", "OVER_RUN_STATUSES",
]
