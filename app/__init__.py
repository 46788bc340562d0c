"""Baton: Conductor-style JSON workflows compiled to Celery canvas, run on per-queue workers.

`celery -A app worker -Q <queue>` starts a worker; `submit_workflow` starts a run.
Importing the package registers Baton's control tasks and imports the transformation
modules (`tasks` and those listed in BATON_TRANSFORMATIONS), so client and workers agree
on names and queues.
"""

from app.celery_app import celery_app as celery
from app.client import (
    BrokerUnavailable,
    RunSummary,
    Step,
    WorkflowRun,
    get_run,
    list_runs,
    submit_workflow,
)
from app.definitions import get_workflow, list_workflows, register_workflow
from app.dsl.load import load_definition
from app.errors import (
    BatonError,
    DefinitionError,
    Problem,
    RunNotFound,
    StoreUnavailable,
    TerminalError,
    TransformationError,
    WaitTimeout,
    WorkflowFailed,
)
from app.limits import Limit
from app.policy import RetryLogic, StepPolicy
from app.runtime import control as _control  # noqa: F401  (registers baton.* tasks)
from app.runtime import fork_sending as _fork_sending  # noqa: F401  (registers baton.fork)
from app.runtime import integrations as _integrations  # noqa: F401
from app.runtime import poll_timers as _poll_timers  # noqa: F401  (times out unconsumed steps)
from app.runtime import run_limits as _run_limits  # noqa: F401  (registers baton.start_run)
from app.runtime import subworkflows as _subworkflows  # noqa: F401
from app.runtime import waiting as _waiting  # noqa: F401
from app.runtime.lifecycle import LifecycleError
from app.runtime.run_limits import RunLimitReached
from app.runtime.runs import InvalidInput
from app.runtime.waiting import NotWaiting
from app.store import RunStatus, StepStatus
from app.transformation import transformation

__all__ = [
    # Running workflows
    "submit_workflow",
    "get_run",
    "list_runs",
    "RunSummary",
    "WorkflowRun",
    "RunStatus",
    "Step",
    "StepStatus",
    "load_definition",
    "register_workflow",
    "get_workflow",
    "list_workflows",
    # Declaring transformations
    "transformation",
    "StepPolicy",
    "RetryLogic",
    "Limit",
    # Celery
    "celery",
    # Errors
    "BatonError",
    "BrokerUnavailable",
    "DefinitionError",
    "InvalidInput",
    "LifecycleError",
    "NotWaiting",
    "Problem",
    "RunLimitReached",
    "RunNotFound",
    "StoreUnavailable",
    "TerminalError",
    "TransformationError",
    "WaitTimeout",
    "WorkflowFailed",
]

# Last: transformation modules import `app` themselves (`from app import transformation`).
from app.loader import load_transformations  # noqa: E402

load_transformations()
