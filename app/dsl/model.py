"""Pydantic models of Conductor's workflow definition language (schemaVersion 2).

The classes mirror Conductor's metadata classes field for field (WorkflowDef, WorkflowTask,
TaskDef, SubWorkflowParams, RateLimitConfig, CacheConfig, StateChangeEvent, SchemaDef and
their common Auditable fields), so any definition Conductor accepts loads here and dumps
back to the same JSON. Python attributes are snake_case; JSON names are Conductor's.

Only the shape of each object is checked here: names, types, enum values, required and
non-empty fields. Checks that span fields or tasks (duplicate reference names, JOIN placement,
expression references) belong to the validator. This module knows nothing of Celery or Redis.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

#: Every member of Conductor's TaskType enum. Conductor itself maps an unknown type to
#: USER_DEFINED (a plugin system task); Baton has no plugins, so an unknown type is a typo.
TASK_TYPES: frozenset[str] = frozenset(
    {
        "SIMPLE", "DYNAMIC", "FORK_JOIN", "FORK_JOIN_DYNAMIC", "DECISION", "SWITCH", "JOIN",
        "DO_WHILE", "SUB_WORKFLOW", "START_WORKFLOW", "EVENT", "WAIT", "HUMAN", "USER_DEFINED",
        "HTTP", "LAMBDA", "INLINE", "EXCLUSIVE_JOIN", "TERMINATE", "KAFKA_PUBLISH",
        "JSON_JQ_TRANSFORM", "SET_VARIABLE", "NOOP",
        "LLM_TEXT_COMPLETE", "LLM_CHAT_COMPLETE", "LLM_INDEX_TEXT", "LLM_SEARCH_INDEX",
        "LLM_GENERATE_EMBEDDINGS", "LLM_STORE_EMBEDDINGS", "LLM_GET_EMBEDDINGS",
        "LIST_MCP_TOOLS", "CALL_MCP_TOOL", "PULL_WORKFLOW_MESSAGES",
        "AGENT", "GET_AGENT_CARD", "CANCEL_AGENT",
    }
)  # fmt: skip

# Conductor's @NotEmpty: null and "" are both rejected.
NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
# Java int/long fields that Conductor bounds with @Min(0) / @PositiveOrZero.
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]

# Enum-typed Java fields; Jackson matches enum constants case-sensitively.
WorkflowTimeoutPolicy = Literal["TIME_OUT_WF", "ALERT_ONLY"]
TaskTimeoutPolicy = Literal["RETRY", "TIME_OUT_WF", "ALERT_ONLY"]
RetryLogic = Literal["FIXED", "EXPONENTIAL_BACKOFF", "LINEAR_BACKOFF"]
RateLimitPolicy = Literal["QUEUE", "REJECT"]
IdempotencyStrategy = Literal["FAIL", "RETURN_EXISTING", "FAIL_ON_RUNNING"]
JoinMode = Literal["SYNC", "ASYNC"]
SchemaType = Literal["JSON", "AVRO", "PROTOBUF"]


class ConductorModel(BaseModel):
    """Base of every model: Conductor's camelCase JSON names, unknown fields rejected."""

    # Conductor itself ignores unknown properties; here a misspelt field is an error rather
    # than a setting that silently does nothing.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


class Auditable(ConductorModel):
    """Bookkeeping fields Conductor stores on every definition (epoch millis, user names)."""

    owner_app: StrictStr | None = None
    create_time: StrictInt | None = None
    update_time: StrictInt | None = None
    created_by: StrictStr | None = None
    updated_by: StrictStr | None = None


class SchemaDef(Auditable):
    """A reference to an input or output schema (Conductor's SchemaDef)."""

    name: StrictStr
    version: StrictInt = 1
    type: SchemaType
    data: dict[str, Any] | None = None
    external_ref: StrictStr | None = None


class RateLimitConfig(ConductorModel):
    """Workflow-level concurrency limit keyed by an (often templated) rate limit key."""

    rate_limit_key: StrictStr | None = None
    concurrent_exec_limit: StrictInt = 0
    policy: RateLimitPolicy = "QUEUE"


class CacheConfig(ConductorModel):
    """Output caching of a task or workflow: a (templated) key and a time to live."""

    key: StrictStr | None = None
    ttl_in_second: StrictInt = 0


class StateChangeEvent(ConductorModel):
    """One event published when a task changes state (an entry of `onStateChange`)."""

    type: StrictStr
    payload: dict[str, Any] | None = None


class TaskDef(Auditable):
    """A task definition, as embedded in a workflow task's `taskDefinition`."""

    name: NonEmptyStr
    description: StrictStr | None = None
    retry_count: NonNegativeInt = 3
    timeout_seconds: StrictInt = 0
    input_keys: list[StrictStr] = Field(default_factory=list)
    output_keys: list[StrictStr] = Field(default_factory=list)
    runtime_metadata: list[StrictStr] = Field(default_factory=list)
    timeout_policy: TaskTimeoutPolicy = "TIME_OUT_WF"
    retry_logic: RetryLogic = "FIXED"
    retry_delay_seconds: StrictInt = 60
    response_timeout_seconds: Annotated[StrictInt, Field(ge=1)] = 3600
    concurrent_exec_limit: StrictInt | None = None
    input_template: dict[str, Any] = Field(default_factory=dict)
    rate_limit_per_frequency: StrictInt | None = None
    rate_limit_frequency_in_seconds: StrictInt | None = None
    isolation_group_id: StrictStr | None = None
    execution_name_space: StrictStr | None = None
    owner_email: StrictStr | None = None
    poll_timeout_seconds: NonNegativeInt | None = None
    backoff_scale_factor: Annotated[StrictInt, Field(ge=1)] | None = 1
    max_retry_delay_seconds: NonNegativeInt = 0
    backoff_jitter_ms: NonNegativeInt = 0
    base_type: StrictStr | None = None
    total_timeout_seconds: NonNegativeInt = 0
    task_status_listener_enabled: StrictBool = True
    input_schema: SchemaDef | None = None
    output_schema: SchemaDef | None = None
    enforce_schema: StrictBool = False


def _definition_kind(value: Any) -> str | None:
    """Picks the branch of `workflowDefinition`, so errors name only the branch meant."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict | WorkflowDef):
        return "WorkflowDef"
    return None


class SubWorkflowParams(ConductorModel):
    """Which workflow a SUB_WORKFLOW task runs: by name/version or as an inline definition."""

    name: StrictStr | None = None
    version: StrictInt | None = None
    task_to_domain: dict[str, StrictStr] | None = None
    # Conductor types this as Object: an inline WorkflowDef or a `${...}` expression that
    # yields one at run time.
    workflow_definition: (
        Annotated[
            Annotated[WorkflowDef, Tag("WorkflowDef")] | Annotated[StrictStr, Tag("str")],
            Discriminator(
                _definition_kind,
                custom_error_type="workflow_definition_type",
                custom_error_message="workflowDefinition must be an object or a ${...} expression",
            ),
        ]
        | None
    ) = None
    idempotency_key: StrictStr | None = None
    idempotency_strategy: IdempotencyStrategy | None = None
    # Object in Conductor: a priority number or an expression that yields one.
    priority: StrictInt | StrictStr | None = None

    @field_validator("workflow_definition")
    @classmethod
    def _check_expression(cls, value: WorkflowDef | str | None) -> WorkflowDef | str | None:
        # Same rule as Conductor's setter: a string is accepted only as a whole expression.
        if isinstance(value, str) and not (value.startswith("${") and value.endswith("}")):
            raise PydanticCustomError(
                "workflow_definition_expression",
                "a workflowDefinition string must be a ${...} expression",
            )
        return value


class WorkflowTask(ConductorModel):
    """One task of a workflow definition, including the operators' nested task lists."""

    name: NonEmptyStr
    task_reference_name: NonEmptyStr
    description: StrictStr | None = None
    input_parameters: dict[str, Any] = Field(default_factory=dict)
    # A plain str (not an Enum) so that callers compare `task.type == "SIMPLE"`.
    type: StrictStr = "SIMPLE"
    dynamic_task_name_param: StrictStr | None = None
    case_value_param: StrictStr | None = None  # deprecated DECISION form
    case_expression: StrictStr | None = None  # deprecated DECISION form
    script_expression: StrictStr | None = None
    decision_cases: dict[str, list[WorkflowTask]] = Field(default_factory=dict)
    dynamic_fork_join_tasks_param: StrictStr | None = None  # deprecated
    dynamic_fork_tasks_param: StrictStr | None = None
    dynamic_fork_tasks_input_param_name: StrictStr | None = None
    default_case: list[WorkflowTask] = Field(default_factory=list)
    fork_tasks: list[list[WorkflowTask]] = Field(default_factory=list)
    start_delay: NonNegativeInt = 0
    sub_workflow_param: SubWorkflowParams | None = None
    join_on: list[StrictStr] = Field(default_factory=list)
    sink: StrictStr | None = None
    optional: StrictBool = False
    task_definition: TaskDef | None = None
    rate_limited: StrictBool | None = None
    default_exclusive_join_task: list[StrictStr] = Field(default_factory=list)
    async_complete: StrictBool | None = False
    loop_condition: StrictStr | None = None
    loop_over: list[WorkflowTask] = Field(default_factory=list)
    items: StrictStr | None = None  # DO_WHILE list iteration: an expression yielding a list
    retry_count: StrictInt | None = None
    evaluator_type: StrictStr | None = None
    expression: StrictStr | None = None
    on_state_change: dict[str, list[StateChangeEvent]] = Field(default_factory=dict)
    join_status: StrictStr | None = None
    cache_config: CacheConfig | None = None
    permissive: StrictBool = False
    join_mode: JoinMode | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        if value in TASK_TYPES:
            return value
        # Conductor's enum is case-sensitive, so "simple" is wrong but worth a precise hint.
        close = difflib.get_close_matches(value.upper(), sorted(TASK_TYPES), n=1, cutoff=0.6)
        if close:
            hint = f" (did you mean '{close[0]}'?)"
        else:
            hint = f" (expected one of {', '.join(sorted(TASK_TYPES))})"
        raise PydanticCustomError(
            "unknown_task_type", "unknown task type '{type}'{hint}", {"type": value, "hint": hint}
        )

    def children(self) -> list[tuple[str, list[WorkflowTask]]]:
        """Every non-empty nested task list, each with its path relative to this task.

        Paths read like `forkTasks[0]`, `decisionCases.caseA`, `defaultCase`, `loopOver`, so
        a walker can prefix them to build locations for error messages. The lists are
        returned whatever the task's type; deciding which belong to which type is the
        validator's job. An inline sub-workflow is a separate workflow and is not a child.
        """
        if not (self.fork_tasks or self.decision_cases or self.default_case or self.loop_over):
            return []  # most tasks: walks of 100,000 tasks ask every one of them
        found: list[tuple[str, list[WorkflowTask]]] = [
            (f"forkTasks[{i}]", branch) for i, branch in enumerate(self.fork_tasks) if branch
        ]
        found += [(f"decisionCases.{k}", ts) for k, ts in self.decision_cases.items() if ts]
        if self.default_case:
            found.append(("defaultCase", self.default_case))
        if self.loop_over:
            found.append(("loopOver", self.loop_over))
        return found


class WorkflowDef(Auditable):
    """A whole workflow definition (Conductor's WorkflowDef, schemaVersion 2 only)."""

    name: NonEmptyStr
    description: StrictStr | None = None
    version: StrictInt = 1
    tasks: list[WorkflowTask]
    input_parameters: list[StrictStr] = Field(default_factory=list)
    output_parameters: dict[str, Any] = Field(default_factory=dict)
    failure_workflow: StrictStr | None = None
    schema_version: StrictInt = 2
    restartable: StrictBool = True
    workflow_status_listener_enabled: StrictBool = False
    owner_email: StrictStr | None = None
    timeout_policy: WorkflowTimeoutPolicy = "ALERT_ONLY"
    timeout_seconds: StrictInt = 0
    variables: dict[str, Any] = Field(default_factory=dict)
    input_template: dict[str, Any] = Field(default_factory=dict)
    failure_workflow_version: StrictInt | None = None
    workflow_status_listener_sink: StrictStr | None = None
    rate_limit_config: RateLimitConfig | None = None
    input_schema: SchemaDef | None = None
    output_schema: SchemaDef | None = None
    enforce_schema: StrictBool = True
    metadata: dict[str, Any] = Field(default_factory=dict)
    cache_config: CacheConfig | None = None
    masked_fields: list[StrictStr] = Field(default_factory=list)

    @field_validator("schema_version")
    @classmethod
    def _check_schema_version(cls, value: int) -> int:
        # Version 1 definitions use a different task layout that Baton does not read.
        if value != 2:
            raise PydanticCustomError("schema_version", "only schemaVersion 2 is supported")
        return value

    @field_validator("tasks")
    @classmethod
    def _check_tasks(cls, value: list[WorkflowTask]) -> list[WorkflowTask]:
        if not value:
            raise PydanticCustomError("no_tasks", "a workflow needs at least one task")
        return value

    def to_json_dict(self) -> dict[str, Any]:
        """The definition as Conductor JSON, with only the fields that were given."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# The three classes refer to one another (a task may carry an inline sub-workflow).
SubWorkflowParams.model_rebuild()
WorkflowTask.model_rebuild()
WorkflowDef.model_rebuild()
