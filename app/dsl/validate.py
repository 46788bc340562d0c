"""Static validation of a workflow definition: every problem at once, as `path: message`.

Checks what the schema alone cannot: unique reference names that Baton does not reserve
(loop iteration records, expression roots, expression or Redis key syntax), known
transformations and the input they take, fork/join shape, scripts that do not compile, and
that every `${ref...}` names a task that is guaranteed to have completed before the task
that reads it. A definition with schema errors is still checked, task by task, wherever it
is well-formed, so one DefinitionError names every problem.

What Conductor accepts and runs is a warning, not an error: a `${ref...}` naming a task
that is not in the definition, runs later or runs only in another SWITCH case resolves to
null at run time. Strict mode (BATON_STRICT, or `strict=True`) makes warnings errors.
Knows nothing of Celery or Redis (beyond the names they reserve); the transformations to
check against are passed in.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from app.config import get_settings
from app.dsl import scripts
from app.dsl.cache import cache_key, input_names
from app.dsl.expressions import (
    TASK_ID_ROOT,
    WORKFLOW_ROOT,
    Parameter,
    ParseFailure,
    parse_parameter,
)
from app.dsl.fields import unhonoured_fields
from app.dsl.model import WorkflowDef, WorkflowTask
from app.dsl.partial import Repair, repair
from app.dsl.state_changes import payloads
from app.errors import DefinitionError, Problem
from app.gc_pause import without_gc
from app.payloads import InvalidPayload, check_shape
from app.registry import Transformation

FORK_TYPES = frozenset({"FORK_JOIN", "FORK_JOIN_DYNAMIC"})
_BRANCHING = frozenset({"DECISION", "SWITCH"})

# A step of loop iteration n is recorded as `<ref>__<n>` (app.runtime.step.record_ref), so a
# ref of that shape could overwrite, or be read as, an iteration record of another task.
_ITERATION_REF = re.compile(r"(.+)__\d+")
# Names an expression resolves specially, before any task record (app.runtime.scope).
_EXPRESSION_ROOTS = {WORKFLOW_ROOT: "${workflow...}", TASK_ID_ROOT: "${CPEWF_TASK_ID}"}
# Syntax of `${...}` and its paths (`${a.b[0]}`): a ref holding one is misread, or not read.
_EXPRESSION_SYNTAX = ".[]${}"
# Joins the parts of a step's Redis keys (the run store's keys module): `x:attempts` would be
# the key of the failed attempts of step `x`.
_KEY_SEPARATOR = ":"


@without_gc
def parse_definition(
    data: Mapping[str, Any],
    transformations: Mapping[str, Transformation] | None = None,
    *,
    strict: bool | None = None,
) -> WorkflowDef:
    """Validate raw JSON data against the schema; DefinitionError lists every problem.

    The tasks are counted first, on the raw data: a definition over the task limit is
    refused before the schema builds a model of every one of its tasks. With schema
    errors, the definition's well-formed parts are checked as check_definition would
    (`transformations` and `strict` as there), so the error names every problem at once.
    """
    _check_size(_count_raw_tasks(data))
    _check_shape(data)
    try:
        return WorkflowDef.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    problems = _schema_problems(errors)
    problems += partial_problems(data, errors, transformations, is_strict(strict))
    raise DefinitionError(problems) from None


def is_strict(strict: bool | None) -> bool:
    """`strict`, or the setting BATON_STRICT when it is None."""
    return get_settings().strict if strict is None else strict


@without_gc
def check_definition(
    definition: WorkflowDef,
    transformations: Mapping[str, Transformation] | None = None,
    *,
    strict: bool | None = None,
    warnings: Sequence[Problem] = (),
) -> list[Problem]:
    """Raise DefinitionError listing every problem; otherwise return the warnings.

    `transformations=None` skips name checks. `warnings` are found earlier (by the loader)
    and returned with the checks' own. In strict mode (`strict`, or BATON_STRICT when
    None) every warning is an error.
    """
    _check_size(sum(1 for _ in _walk_all(definition.tasks)))
    checker = _Checker(definition, transformations, "")
    checker.run()
    found = [*((w, True) for w in warnings), *checker.found]
    return _split(found, is_strict(strict))


def find_problems(
    definition: WorkflowDef,
    transformations: Mapping[str, Transformation] | None = None,
    prefix: str = "",
) -> list[Problem]:
    """Every error and warning, in the order found (as strict mode reports them)."""
    checker = _Checker(definition, transformations, prefix)
    checker.run()
    return [problem for problem, _ in checker.found]


def partial_problems(
    data: Mapping[str, Any],
    errors: Sequence[Any],
    transformations: Mapping[str, Transformation] | None,
    strict: bool,
) -> list[Problem]:
    """What the checks find in the parts of a definition the schema accepted (`errors`)."""
    repaired = repair(data, errors)
    if repaired is None:
        return []
    definition, covered = repaired
    checker = _Checker(definition, transformations, "", covered)
    checker.run()
    return [problem for problem, warning in checker.found if strict or not warning]


def _split(found: Sequence[tuple[Problem, bool]], strict: bool) -> list[Problem]:
    """Raise DefinitionError for the errors (warnings too when strict); return the warnings."""
    errors = [problem for problem, warning in found if strict or not warning]
    if errors:
        raise DefinitionError(errors)
    return [problem for problem, _ in found]


def _check_size(count: int) -> None:
    """Refuse a definition holding more tasks than the limit, before any work per task."""
    limit = get_settings().max_definition_tasks
    if count > limit:
        raise DefinitionError([Problem("tasks", f"{count} tasks (nested ones included) are "
                                                f"over the limit of {limit} "
                                                "(BATON_MAX_DEFINITION_TASKS)")])


def _check_shape(data: Mapping[str, Any]) -> None:
    """Refuse a definition that is not JSON data or nests deeper than JSON payloads may.

    Checked without recursion, before the schema and every later step that recurses
    (pydantic, json.dumps when the run is recorded) meets a definition nested 10,000 deep.
    """
    try:
        check_shape(dict(data), "", max_depth=get_settings().max_json_depth)
    except InvalidPayload as exc:
        path, _, message = str(exc).partition(": ")
        raise DefinitionError([Problem(path.lstrip("."), message)]) from None


def _count_raw_tasks(data: Any) -> int:
    """Tasks in raw definition data, nested and inline sub-workflow ones included.

    Walks with a stack (no recursion) and skips whatever is not shaped like a task list:
    the schema reports that afterwards.
    """
    count = 0
    lists: list[Any] = [data.get("tasks") if isinstance(data, Mapping) else None]
    while lists:
        tasks = lists.pop()
        if not isinstance(tasks, list):
            continue
        for task in tasks:
            if not isinstance(task, Mapping):
                continue
            count += 1
            forks = task.get("forkTasks")
            if isinstance(forks, list):
                lists.extend(forks)
            cases = task.get("decisionCases")
            if isinstance(cases, Mapping):
                lists.extend(cases.values())
            lists.append(task.get("defaultCase"))
            lists.append(task.get("loopOver"))
            params = task.get("subWorkflowParam")
            inline = params.get("workflowDefinition") if isinstance(params, Mapping) else None
            if isinstance(inline, Mapping):
                lists.append(inline.get("tasks"))
    return count


def _walk_all(tasks: Iterable[WorkflowTask]) -> Iterable[WorkflowTask]:
    """Every task, nested and inline sub-workflow ones included, without recursion."""
    stack = [iter(tasks)]
    while stack:
        task = next(stack[-1], None)
        if task is None:
            stack.pop()
            continue
        yield task
        stack.extend(iter(children) for _, children in task.children())
        params = task.sub_workflow_param
        inline = getattr(params, "workflow_definition", None) if params is not None else None
        if isinstance(inline, WorkflowDef):
            stack.append(iter(inline.tasks))


def parse_inputs(task: WorkflowTask) -> Parameter:
    """The task's inputParameters, parsed (assumes the definition was validated)."""
    return parse_parameter(task.input_parameters or {})


class _Scope:
    """What a task may read: refs completed for sure, refs that may have run.

    `apart` names the refs that can never have run before a task here, with the reason
    (another case of a SWITCH); `branches` are the fork branches a task here runs in, so a
    ref of a sibling branch is told apart without listing every sibling's refs (a fork can
    have thousands of branches). Any other unreadable ref runs later.

    A scope is a layer over the scope it was made from (`layer`): it holds only what was
    added in it, and lookups go down the layers. Copying every readable ref into each
    nested scope made a chain of n tasks cost n^2. A layer's parent is not changed while
    the layer is in use (a nested sequence is checked before its parent goes on).
    """

    def __init__(self, parent: _Scope | None = None) -> None:
        self.parent = parent
        self.done: set[str] = set()
        self.maybe: set[str] = set()
        self.apart: dict[str, str] = {}
        self.branches: dict[str, int] = {}
        """Fork ref -> index of the branch a task here runs in."""

    def layer(self) -> _Scope:
        return _Scope(self)

    def _layers(self) -> Iterator[_Scope]:
        scope: _Scope | None = self
        while scope is not None:
            yield scope
            scope = scope.parent

    def readable(self, ref: str) -> bool:
        return any(ref in s.done or ref in s.maybe for s in self._layers())

    def apart_reason(self, ref: str) -> str | None:
        return next((s.apart[ref] for s in self._layers() if ref in s.apart), None)

    def branch(self, fork: str) -> int | None:
        return next((s.branches[fork] for s in self._layers() if fork in s.branches), None)

    def added(self) -> set[str]:
        """The refs made readable in this layer itself."""
        return self.done | self.maybe


class _Checker:
    def __init__(
        self,
        definition: WorkflowDef,
        transformations: Mapping[str, Transformation] | None,
        prefix: str,
        repaired: Repair | None = None,
    ) -> None:
        self.definition = definition
        self.transformations = transformations
        self.prefix = prefix
        self.found: list[tuple[Problem, bool]] = []
        """Every problem in the order found, each with whether it is only a warning."""
        self.repaired = repaired or Repair()
        self.first_seen: dict[str, str] = {}
        self.branch_of: dict[str, tuple[str, int]] = {}
        """Ref of a task inside a fork branch -> (fork ref, branch index)."""

    def run(self) -> None:
        for problem in unhonoured_fields(self.definition, self.prefix):
            self._add(problem.path, problem.message)
        self._collect(self.definition.tasks, self._path("tasks"))
        scope = self._sequence(self.definition.tasks, self._path("tasks"), _Scope())
        where = self._path("outputParameters")
        output = self._parse(self.definition.output_parameters or {}, where)
        if output is not None:
            self._check_roots(output, where, scope, own_ref=None)

    def _path(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}" if self.prefix else suffix

    def _add(self, path: str, message: str, *, warning: bool = False) -> None:
        if not self.repaired.covers(path):
            self.found.append((Problem(path, message), warning))

    def _warn(self, path: str, message: str) -> None:
        """Something Conductor accepts, but that is likely a mistake (an error when strict)."""
        self._add(path, message, warning=True)

    def _collect(self, tasks: Sequence[WorkflowTask], path: str) -> None:
        for index, task in enumerate(tasks):
            here = f"{path}[{index}]"
            ref = task.task_reference_name
            for message in ref_problems(ref):
                self._add(f"{here}.taskReferenceName", message)
            if ref in self.first_seen:
                self._add(
                    f"{here}.taskReferenceName",
                    f"duplicate taskReferenceName '{ref}' (first at {self.first_seen[ref]})",
                )
            else:
                self.first_seen[ref] = here
            for suffix, children in task.children():
                self._collect(children, f"{here}.{suffix}")

    def _sequence(self, tasks: Sequence[WorkflowTask], path: str, scope: _Scope) -> _Scope:
        scope = scope.layer()
        for index, task in enumerate(tasks):
            here = f"{path}[{index}]"
            following = tasks[index + 1] if index + 1 < len(tasks) else None
            previous = tasks[index - 1] if index > 0 else None
            self._task(task, here, scope, following, previous)
            scope.done.add(task.task_reference_name)
        return scope

    def _task(
        self,
        task: WorkflowTask,
        path: str,
        scope: _Scope,
        following: WorkflowTask | None,
        previous: WorkflowTask | None,
    ) -> None:
        ref = task.task_reference_name
        inputs = self._parse(task.input_parameters or {}, f"{path}.inputParameters")
        if inputs is not None:
            self._check_roots(inputs, f"{path}.inputParameters", scope, own_ref=ref)
        self._state_changes(task, path, scope)
        self._cache_key(task, f"{path}.cacheConfig.key", scope)
        self._scripts(task, path)
        if task.type == "SIMPLE":
            self._simple(task, path, inputs)
        elif task.type == "FORK_JOIN":
            self._fork(task, path, scope, following)
        elif task.type == "FORK_JOIN_DYNAMIC":
            if following is None or following.type != "JOIN":
                self._add(path, f"FORK_JOIN_DYNAMIC '{ref}' must be followed by a JOIN")
        elif task.type == "JOIN":
            if previous is None or previous.type not in FORK_TYPES:
                self._add(path, f"JOIN '{ref}' must directly follow a FORK_JOIN")
        elif task.type in _BRANCHING:
            # The SWITCH completes (its output names the case) before its case runs, and at
            # most one case runs: a case cannot read another.
            cases = task.children()
            reached: set[str] = set()
            for suffix, children in cases:
                case_scope = scope.layer()
                case_scope.done.add(ref)
                for other, other_children in cases:
                    if other != suffix:
                        reason = f"runs only in another case of {task.type} '{ref}' ({other})"
                        case_scope.apart.update(
                            (t.task_reference_name, reason) for t in _walk(other_children)
                        )
                inner = self._sequence(children, f"{path}.{suffix}", case_scope)
                reached |= inner.added() | case_scope.added()
            scope.maybe |= reached
        elif task.type == "DO_WHILE":
            body = [(suffix, children) for suffix, children in task.children()]
            loop_scope = scope.layer()
            loop_scope.maybe.add(ref)  # the loop's own output (iteration) is readable inside
            for _, children in body:
                loop_scope.maybe |= {t.task_reference_name for t in _walk(children)}
            for suffix, children in body:
                self._sequence(children, f"{path}.{suffix}", loop_scope)
            for _, children in body:
                scope.maybe |= {t.task_reference_name for t in _walk(children)}
        else:
            reached = set()
            for suffix, children in task.children():
                inner = self._sequence(children, f"{path}.{suffix}", scope)
                reached |= inner.added()
            scope.maybe |= reached
        self._inline_subworkflow(task, path)

    def _state_changes(self, task: WorkflowTask, path: str, scope: _Scope) -> None:
        """Event payloads read what the task's input may, and the task's own record."""
        own = scope.layer()
        own.done.add(task.task_reference_name)
        for suffix, payload in payloads(task):
            parsed = self._parse(payload, f"{path}.{suffix}")
            if parsed is not None:
                self._check_roots(parsed, f"{path}.{suffix}", own, own_ref=None)

    def _cache_key(self, task: WorkflowTask, path: str, scope: _Scope) -> None:
        """A cache key reads the task's input parameters by name, and the run's scope as
        inputParameters do (app.dsl.cache)."""
        key = cache_key(task.cache_config)
        if key is not None:
            known = scope.layer()
            known.done |= input_names(task)
            self._check_roots(key, path, known, own_ref=task.task_reference_name)

    def _scripts(self, task: WorkflowTask, path: str) -> None:
        """Compile the task's literal scripts (JavaScript, jq) without running them."""
        given = task.input_parameters or {}
        found: list[tuple[str, Any]] = []
        if task.type == "DO_WHILE":
            found.append(("loopCondition", task.loop_condition))
        elif task.type == "DECISION":
            found.append(("caseExpression", task.case_expression))
        elif task.type == "SWITCH" and task.evaluator_type in scripts.JAVASCRIPT_EVALUATORS:
            found.append(("expression", task.expression))
        elif task.type == "INLINE":
            evaluator = given.get("evaluatorType", task.evaluator_type) or "javascript"
            if evaluator in scripts.JAVASCRIPT_EVALUATORS:
                found.append(_script_field(given, "expression", task.expression))
        elif task.type == "LAMBDA":
            found.append(_script_field(given, "scriptExpression", task.script_expression))
        elif task.type == "JSON_JQ_TRANSFORM":
            query = scripts.literal(given.get("queryExpression"))
            if query is not None and query.strip():
                message = scripts.jq_problem(query)
                if message is not None:
                    self._add(f"{path}.inputParameters.queryExpression", message)
        for where, source in found:
            source = scripts.literal(source)
            if source is not None:
                message = scripts.javascript_problem(source, function_body=task.type == "LAMBDA")
                if message is not None:
                    self._add(f"{path}.{where}", message)

    def _simple(self, task: WorkflowTask, path: str, inputs: Parameter | None) -> None:
        if self.transformations is None:
            return
        found = self.transformations.get(task.name)
        if found is None:
            hint = _did_you_mean(task.name, self.transformations)
            self._add(f"{path}.name", f"unknown transformation '{task.name}'{hint}")
            return
        keys = set((task.input_parameters or {}).keys())
        for message in found.input_problems(keys):
            self._add(f"{path}.inputParameters", message)

    def _fork(
        self, task: WorkflowTask, path: str, scope: _Scope, following: WorkflowTask | None
    ) -> None:
        ref = task.task_reference_name
        branches = task.fork_tasks or []
        if not branches:
            self._add(f"{path}.forkTasks", f"FORK_JOIN '{ref}' has no branches")
        ends: list[str] = []
        joined = _Scope()  # what the branches add
        for index, branch in enumerate(branches):
            if not branch:
                self._add(f"{path}.forkTasks[{index}]", "a fork branch needs at least one task")
                continue
            # The fork completes as its branches start, so a branch may read its input.
            for inner_task in _walk(branch):
                self.branch_of[inner_task.task_reference_name] = (ref, index)
            branch_scope = scope.layer()
            branch_scope.done.add(ref)
            branch_scope.branches[ref] = index
            inner = self._sequence(branch, f"{path}.forkTasks[{index}]", branch_scope)
            ends.extend(_branch_ends(branch))
            joined.done |= inner.done
            joined.maybe |= inner.maybe
        # Baton's JOIN waits for every branch, so every branch step is readable after it (and
        # after a missing JOIN too: that is reported once, not again at every later read).
        scope.done |= joined.done | {ref}
        scope.maybe |= joined.maybe
        if following is None or following.type != "JOIN":
            self._add(path, f"FORK_JOIN '{ref}' must be followed by a JOIN")
            return
        # Like Conductor, a JOIN may wait on a task that ends a case of a SWITCH or DECISION
        # ending a branch: it waits for it if that case runs (app.runtime.operators.join).
        branch_ends = set(ends)
        for index, name in enumerate(following.join_on or []):
            if name not in branch_ends:
                listed = ", ".join(f"'{e}'" for e in ends) or "none"
                self._add(
                    f"{_next_path(path)}.joinOn[{index}]",
                    f"'{name}' ends no branch of fork '{ref}' (branch ends: {listed})",
                )

    def _sibling(self, root: str, scope: _Scope) -> bool:
        """Whether `root` runs in another branch of a fork the reading task runs in."""
        found = self.branch_of.get(root)
        return found is not None and scope.branch(found[0]) not in (None, found[1])

    def _inline_subworkflow(self, task: WorkflowTask, path: str) -> None:
        params = task.sub_workflow_param
        inline = getattr(params, "workflow_definition", None) if params is not None else None
        if isinstance(inline, WorkflowDef):
            prefix = f"{path}.subWorkflowParam.workflowDefinition"
            checker = _Checker(inline, self.transformations, prefix, self.repaired)
            checker.run()
            self.found += checker.found

    def _parse(self, value: Any, path: str) -> Parameter | None:
        try:
            return parse_parameter(value)
        except ParseFailure as exc:
            self._add(path + exc.location, str(exc))
            return None

    def _check_roots(
        self, parameter: Parameter, path: str, scope: _Scope, own_ref: str | None
    ) -> None:
        for location, expression in parameter.located_expressions():
            where = path + location
            root = expression.static_root
            if root is None or root in (WORKFLOW_ROOT, TASK_ID_ROOT):
                continue
            if root in self.repaired.refs:
                continue  # a task whose own schema failed: reported there
            if scope.readable(root):
                continue
            text = "${" + "".join(p if isinstance(p, str) else "${...}" for p in expression.parts)
            text += "}"
            if root == own_ref:
                self._add(where, f"{text} reads the task's own record")
            elif (reason := scope.apart_reason(root)) is not None:
                # Conductor resolves it to null, as Baton does: the other case never ran
                self._warn(where, f"{text} names task '{root}', which {reason}")
            elif self._sibling(root, scope):
                fork, other = self.branch_of[root]
                self._add(where, f"{text} names task '{root}', which runs in a parallel branch "
                                 f"of fork '{fork}' (forkTasks[{other}])")
            elif root in self.first_seen:
                self._warn(where, f"{text} names task '{root}', which runs later")
            else:
                # Conductor resolves a ref it does not know to null at run time
                hint = _did_you_mean(root, [*self.first_seen, WORKFLOW_ROOT])
                self._warn(where, f"{text} names unknown task reference '{root}'{hint}")


def _script_field(given: Mapping[str, Any], key: str, field: Any) -> tuple[str, Any]:
    """Where a script is (input parameter first, as the operator reads it) and its text."""
    return (f"inputParameters.{key}", given[key]) if key in given else (key, field)


def ref_problems(ref: str) -> list[str]:
    """Why a taskReferenceName is refused whatever the rest of the definition holds."""
    if not ref.strip():
        return ["a taskReferenceName cannot be blank"]
    name = _quote(ref)
    found = []
    if ref != ref.strip():
        found.append(f"{name} starts or ends with whitespace, which ${{...}} expressions "
                     "strip; choose another name")
    syntax = [c for c in _EXPRESSION_SYNTAX if c in ref]
    if syntax:
        listed = ", ".join(f"'{c}'" for c in syntax)
        found.append(f"{name} contains {listed}, which ${{...}} expressions read as syntax; "
                     "choose another name")
    if _KEY_SEPARATOR in ref:
        found.append(f"{name} contains '{_KEY_SEPARATOR}', which separates the parts of "
                     "Baton's Redis keys (a step's failed attempts are kept under "
                     "'<ref>:attempts'); choose another name")
    iteration = _ITERATION_REF.fullmatch(ref)
    if iteration:
        found.append(f"{name} ends in '__<number>', which Baton keeps for loop iterations "
                     f"of {_quote(iteration.group(1))}; choose another name")
    if ref in _EXPRESSION_ROOTS:
        found.append(f"{name} is an expression root ({_EXPRESSION_ROOTS[ref]}); "
                     "a task cannot take this name")
    return found


def _quote(ref: str) -> str:
    """The ref in quotes, with any control character escaped to keep a message on one line."""
    return f"'{ref}'" if ref.isprintable() else repr(ref)


def _walk(tasks: Iterable[WorkflowTask]) -> Iterable[WorkflowTask]:
    for task in tasks:
        yield task
        for _, children in task.children():
            yield from _walk(children)


def _branch_ends(branch: Sequence[WorkflowTask]) -> list[str]:
    """The refs a fork branch can end with: its last task, and when that is a SWITCH or
    DECISION, what each of its cases (the default included) can end with."""
    last = branch[-1]
    ends = [last.task_reference_name]
    if last.type in _BRANCHING:
        for _, case in last.children():
            if case:
                ends.extend(_branch_ends(case))
    return ends


def _next_path(path: str) -> str:
    head, _, index = path.rpartition("[")
    return f"{head}[{int(index.rstrip(']')) + 1}]"


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _schema_problems(errors: list[Any]) -> list[Problem]:
    """One problem per location: a value no member of a union accepts fails once per member."""
    found: dict[str, list[str]] = {}
    for error in errors:
        problem = _schema_problem(error)
        messages = found.setdefault(problem.path, [])
        if problem.message not in messages:
            messages.append(problem.message)
    return [Problem(path, "; ".join(messages)) for path, messages in found.items()]


# Fields typed as a union, and pydantic's names for their members, which it puts in `loc`.
_UNION_MEMBERS = {"workflowDefinition": ("str", "WorkflowDef"), "priority": ("int", "str")}


def _schema_problem(error: Any) -> Problem:
    path = ""
    previous: Any = None
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "union[")) or (
            isinstance(previous, str) and part in _UNION_MEMBERS.get(previous, ())
        ):
            pass  # pydantic's names for union members and validators, not the user's
        else:
            path += f".{part}" if path else str(part)
        previous = part
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return Problem(path, message)
