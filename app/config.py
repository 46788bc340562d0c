"""Baton's settings, read from the environment (REDIS_URL and BATON_*).

Every Celery setting Baton relies on has a typed field here so that an operator can
override it per deployment without touching code.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Deployment settings; each field is read from `BATON_<FIELD>` unless noted."""

    model_config = SettingsConfigDict(env_prefix="BATON_", extra="ignore")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "BATON_REDIS_URL"),
    )
    """Broker, result backend and run store (all three live in one Redis)."""

    transformations: str = ""
    """Comma-separated modules of user transformations imported beside `tasks`."""

    control_queue: str = "baton"
    """Queue of Baton's own control tasks (join, continue)."""

    retention_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    """How long a run's records stay in Redis after it ended (an open run never expires)."""

    segment_size: int = Field(default=32, ge=2)
    """Stages compiled into one message route before a `continue` hop (bounds message size)."""

    visibility_timeout: int = Field(default=6 * 3600, gt=0)
    """Seconds before an unacknowledged task is delivered again; above the longest task."""

    unacked_restore_interval: int = Field(default=10, gt=0)
    """Seconds between a worker's looks for messages a dead worker held past the
    visibility timeout (kombu's Redis transport)."""

    unacked_restore_throttle: int = Field(default=10, gt=0)
    """Only every n-th look scans Redis; a dead worker's messages come back after about
    visibility_timeout + unacked_restore_interval * unacked_restore_throttle seconds."""

    result_expires: int = Field(default=7 * 24 * 3600, gt=0)
    """Seconds Celery keeps task results (chord bookkeeping); above the longest run."""

    task_acks_late: bool = True
    task_reject_on_worker_lost: bool = True
    worker_prefetch_multiplier: int = Field(default=1, ge=1)
    worker_send_task_events: bool = True
    task_send_sent_event: bool = True
    worker_cancel_long_running_tasks_on_connection_loss: bool = False
    """Off: with Redis as broker and backend, cancelling running steps when Redis restarts
    fails while it is down and leaves the worker's consumer unable to reconnect (seen with
    Celery 5.7). Steps running then are rejected and delivered again instead."""
    max_sub_workflow_depth: int = Field(default=32, ge=1)
    """How deep SUB_WORKFLOW runs may nest (a workflow that starts itself stops here)."""
    max_deliveries: int = Field(default=10, ge=1)
    """A step delivered more often than this fails instead of looping (e.g. it kills its worker)."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
