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

    strict: bool = False
    """Refuse definitions with warnings too (a `${ref...}` naming an unknown task, which
    Conductor reads as null): `baton validate --strict` and `submit --strict` for all."""

    transformations: str = ""
    """Comma-separated modules of user transformations imported beside `tasks`."""

    control_queue: str = "baton"
    """Queue of Baton's own control tasks (join, continue)."""

    retention_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    """How long a run's records stay in Redis after it ended (an open run never expires)."""

    segment_size: int = Field(default=32, ge=2)
    """Stages compiled into one message route before a `continue` hop (bounds message size)."""

    route_bytes: int = Field(default=8 * 1024, ge=2048)
    """Bytes of route (serialised signatures) one broker message may carry: sequences,
    fork branches and wide forks are cut to it (app.compiler.weights). In Redis a message is
    about 4/3 of it (base64 body) plus its headers: 8 KiB keeps every message under 16 KiB."""

    fuse_steps: bool = True
    """Run consecutive steps of one transformation in one message (app.compiler.fusion);
    a workflow turns it off for itself with `metadata: {"baton": {"fuseSteps": false}}`."""

    fork_spread: int = Field(default=128, ge=1)
    """The most messages a fork's branches are spread over: a wider fork sends its one-step
    branches of one transformation in batches, several to a message (app.compiler.batches),
    each still claimed, recorded and retried on its own. Above what the workers run at once,
    more messages buy no parallelism, only broker and bookkeeping work. Off with fusion."""

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
    worker_max_memory_per_child: int = Field(default=512 * 1024, ge=0)
    """KiB a pool process may hold before it is replaced (after its current task): a bound
    on what any leak in an embedded engine or allocator fragmentation can cost. 0: none."""
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
    limit_lease_seconds: float = Field(default=30.0, gt=0)
    """How long a step's slot under a concurrency limit stays held without its worker
    renewing it (every third of it while the step runs): a worker killed while holding a
    slot gives it back within this time (app.runtime.limits)."""
    limit_idle_seconds: float = Field(default=86400.0, gt=0)
    """A keyed limit (one per customer, host...) that nothing holds or waits for is
    forgotten after this long (or its rate's interval, if longer), so keys seen once do not
    stay in Redis for good."""

    # Containment: what a definition or an input may cost. Every limit fails with a message
    # naming it; each is a deliberate ceiling that no sane workflow meets.
    io_queue: str = "baton.io"
    """Queue of I/O-bound system tasks (HTTP, EVENT), so control tasks never wait behind I/O."""
    control_time_limit: int = Field(default=60, ge=1)
    """Hard time limit (seconds) of every control task; the process is killed past it."""
    script_time_limit: float = Field(default=2.0, gt=0)
    """CPU seconds one JavaScript or jq evaluation may take."""
    js_memory_mib: int = Field(default=32, ge=1)
    """Memory one JavaScript evaluation may use, result conversion included."""
    jq_memory_mib: int = Field(default=64, ge=1)
    """Memory (address space above the evaluator's own) one jq evaluation may use."""
    max_json_depth: int = Field(default=128, ge=8)
    """How deeply a workflow input, step output or variable may nest."""
    max_expression_depth: int = Field(default=8, ge=1)
    """How deeply `${...}` expressions may nest inside one another."""
    max_input_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest workflow input (serialised JSON), refused at submit."""
    max_output_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest step output (serialised JSON); a larger one fails the step."""
    max_run_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest total of a run's recorded input, outputs and variables."""
    max_loop_iterations: int = Field(default=10_000, ge=1)
    """Iterations a DO_WHILE may run before it fails."""
    max_fork_width: int = Field(default=10_000, ge=1)
    """Branches a dynamic fork may start."""
    max_definition_tasks: int = Field(default=10_000, ge=1)
    """Tasks a definition may hold, nested ones included."""
    plan_cache_mib: int = Field(default=64, ge=1)
    """Memory budget of a worker process's plan cache (plans are weighed, not counted)."""
    http_connect_timeout: float = Field(default=10.0, gt=0)
    http_read_timeout: float = Field(default=30.0, gt=0)
    http_deadline: float = Field(default=60.0, gt=0)
    """Overall seconds an HTTP step's request may take, redirects and body included."""
    http_max_response_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    http_max_redirects: int = Field(default=5, ge=0)
    http_allow: str = ""
    """Comma-separated hosts (`api.example.com`, `*.example.com`) and networks (CIDR) an HTTP
    step may call even where `http_deny` refuses them."""
    http_deny: str = "private"
    """Comma-separated networks (CIDR) HTTP steps may not call; `private` names loopback,
    link-local (cloud metadata), private, shared, multicast and unspecified addresses; `*`
    refuses everything `http_allow` does not name; empty refuses nothing."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
