"""Task routing facts of a run: Conductor's taskToDomain, isolation groups and priority.

Pure rules, no Redis, no Celery: what a run may be given (`check_task_to_domain`,
`check_priority`), which queue variant a step goes to (`variant_queue`), and how a
Conductor priority maps to a message priority of kombu's Redis transport.

Queue variants. Conductor names a task's queue `domain:taskType@executionNameSpace-
isolationGroupId`. Baton's queue takes the task type's place, and the parts follow it:

    <queue>[:<domain>][@<executionNameSpace>][+<isolationGroupId>]

e.g. transformation `encode` on queue `encode` with domain `gpu` goes to `encode:gpu`. A
declared queue name holds only letters, digits, `_ . -` (app.registry), so a variant can
never be mistaken for a declared queue, and each part is found by its own separator
(Conductor's `-` before the isolation group would clash: `+` stands for it). Celery's
`-Q` takes these names as they are, and so do Redis keys and shell words.

Priority. Conductor's workflow priority is 0-99, a higher number served first (its SQL
queues order by `priority DESC`). Kombu's Redis transport keeps one list per queue and
priority step and pops the lowest step first (0 is served first; a message without a
priority is 0). Baton configures ten steps 0-9 and sends every message of a run with step
`9 - priority // 10`: priority 90-99 is step 0, the default 0-9 is step 9.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from app.payloads import InvalidPayload

DOMAIN_SEPARATOR: Final = ":"
NAMESPACE_SEPARATOR: Final = "@"
ISOLATION_SEPARATOR: Final = "+"
ALL_TASKS: Final = "*"
NO_DOMAIN: Final = "NO_DOMAIN"
"""In a list of domains: no domain (the plain queue) when no domain before it is served."""
MAX_PRIORITY: Final = 99
PRIORITY_STEPS: Final = tuple(range(10))
"""kombu's Redis priority steps (broker_transport_options['priority_steps'])."""
_TOKEN: Final = re.compile(r"^[A-Za-z0-9_.-]+$")
_VARIANT: Final = re.compile(
    r"^(?P<queue>[A-Za-z0-9_.-]+)(?::(?P<domain>[A-Za-z0-9_.-]+))?"
    r"(?:@(?P<namespace>[A-Za-z0-9_.-]+))?(?:\+(?P<isolation>[A-Za-z0-9_.-]+))?$")


class InvalidRouting(InvalidPayload):
    """A taskToDomain or priority a run cannot be given; the message names the path."""


def variant_queue(
    queue: str, domain: str | None = None, namespace: str | None = None,
    isolation: str | None = None,
) -> str:
    """The queue a step goes to: its queue, with whichever parts are given."""
    name = queue
    if domain:
        name += DOMAIN_SEPARATOR + domain
    if namespace:
        name += NAMESPACE_SEPARATOR + namespace
    if isolation:
        name += ISOLATION_SEPARATOR + isolation
    return name


def base_queue(name: str) -> str | None:
    """The declared queue a variant's name is made from (None: not a variant's name)."""
    found = _VARIANT.match(name)
    if found is None or found.group(0) == found.group("queue"):
        return None
    return found.group("queue")


def check_task_to_domain(value: Any, where: str = "taskToDomain") -> dict[str, str]:
    """A run's taskToDomain: task name (or `*`) -> domain, or a comma-separated list of
    domains tried in order ("d1,d2,NO_DOMAIN"). None is {}."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRouting(f"{where}: must be an object of task name -> domain, not "
                             f"{type(value).__name__}")
    checked: dict[str, str] = {}
    for task, domains in value.items():
        if not isinstance(task, str) or not (task == ALL_TASKS or _TOKEN.match(task)):
            raise InvalidRouting(f"{where}: '{task}' is not a task name or '*'")
        if not isinstance(domains, str):
            raise InvalidRouting(f"{where}.{task}: must be a string, not "
                                 f"{type(domains).__name__}")
        parts = [part.strip() for part in domains.split(",")]
        for part in parts:
            if not _TOKEN.match(part):
                raise InvalidRouting(
                    f"{where}.{task}: domain '{part}' may hold only letters, digits, _ . -")
        checked[task] = ",".join(parts)
    return checked


def check_priority(value: Any, where: str = "priority") -> int:
    """A run's priority: a whole number 0-99 (None is 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= MAX_PRIORITY:
        raise InvalidRouting(f"{where}: must be a whole number from 0 to {MAX_PRIORITY}, "
                             f"not {value!r}")
    return value


def check_name_part(value: str | None, where: str) -> str | None:
    """An isolationGroupId or executionNameSpace: a queue name's part, or None."""
    if value is not None and not _TOKEN.match(value):
        return f"{where}: '{value}' may hold only letters, digits, _ . -"
    return None


def domains_for(task_name: str, task_to_domain: Mapping[str, str]) -> list[str]:
    """The domains a task may go to, in order ([] for none): its own entry, else `*`'s."""
    entry = task_to_domain.get(task_name, task_to_domain.get(ALL_TASKS))
    return entry.split(",") if entry else []


def broker_priority(priority: int) -> int:
    """The Redis transport's priority step for a Conductor priority (0 is served first)."""
    return PRIORITY_STEPS[-1] - min(max(priority, 0), MAX_PRIORITY) // 10


def routing_fields(task_to_domain: Any, priority: Any) -> dict[str, str]:
    """The run record's fields for a run's taskToDomain and priority (none when unset)."""
    fields: dict[str, str] = {}
    domains = check_task_to_domain(task_to_domain)
    if domains:
        fields["taskToDomain"] = json.dumps(domains, separators=(",", ":"))
    checked = check_priority(priority)
    if checked:
        fields["priority"] = str(checked)
    return fields
