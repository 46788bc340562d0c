"""A workflow's `maskedFields`: what readers of a run see of the values it names as secret.

The run computes with the real values: the run store keeps them and every step resolves
its input from them. Masking happens where a run is shown: the client's records and steps
(and through them every `baton` command), and the exception a failed step hands to Celery,
whose result backend and events (what Flower shows) would otherwise carry its message.
Celery's messages and results carry only pointers (run id, ref, plan digest) and None.

As Orkes Conductor shows a masked field, its value becomes "***". A field is masked under
its name at any depth of the payloads shown (workflow input and output, step input and
output); besides, the text of each masked value (a string or number of at least
MIN_SECRET_CHARS characters, or each such value inside a masked object) is replaced
wherever it appears in what is shown: under other names, embedded in longer strings, in
errors and their tracebacks, in the run's reason for failing.

The workflow status listener's run summary is written inside Redis by the call that ends
the run: app/store/lua/json_mask.lua applies these same rules there. Change both together
(tests/test_masked_summaries.py compares them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.dsl.model import WorkflowDef
from app.store import RunStore

MASK = "***"
MASKED_FIELDS = "maskedFields"
"""The run record's field that keeps the definition's maskedFields (JSON list)."""
MIN_SECRET_CHARS = 4
"""Shorter masked values are masked under their own name only: replacing every "1" or "no"
in what a run shows would hide more than it protects."""

_RUN_PAYLOADS = ("input", "output")
_STEP_PAYLOADS = ("input", "output", "error")
_RUN_TEXTS = ("reasonForIncompletion",)


def masked_fields_record(workflow: WorkflowDef) -> dict[str, str]:
    """The run record's fields that keep a definition's maskedFields (none when empty)."""
    if not workflow.masked_fields:
        return {}
    return {MASKED_FIELDS: json.dumps(sorted(set(workflow.masked_fields)))}


@dataclass(frozen=True)
class RunMask:
    """The names a run masks and the texts of the values found under them."""

    names: frozenset[str] = frozenset()
    texts: tuple[str, ...] = ()
    """Longest first, so that a secret containing another is replaced whole."""

    @property
    def active(self) -> bool:
        return bool(self.names)

    def value(self, value: Any) -> Any:
        """JSON data as shown: masked names' values and masked texts replaced by MASK.

        A copy, made without recursion: payloads nest as deep as BATON_MAX_JSON_DEPTH.
        """
        if not self.active:
            return value
        holder: list[Any] = [value]
        pending: list[tuple[Any, Any]] = [(holder, 0)]
        while pending:
            parent, place = pending.pop()
            item = parent[place]
            if isinstance(item, dict):
                copy: dict[str, Any] = {}
                for key, child in item.items():
                    shown = self.text(str(key))
                    copy[shown] = MASK if key in self.names else child
                    if key not in self.names:
                        pending.append((copy, shown))
                parent[place] = copy
            elif isinstance(item, list):
                parent[place] = items = list(item)
                pending.extend((items, index) for index in range(len(items)))
            elif isinstance(item, str):
                parent[place] = self.text(item)
            elif isinstance(item, int | float) and not isinstance(item, bool) \
                    and _scalar_text(item) in self.texts:
                parent[place] = MASK
        return holder[0]

    def text(self, text: str) -> str:
        for secret in self.texts:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def run_fields(self, fields: Mapping[str, str]) -> dict[str, str]:
        """A run record (as the store keeps it) as shown."""
        return self._fields(fields, _RUN_PAYLOADS, _RUN_TEXTS)

    def step_fields(self, fields: Mapping[str, str]) -> dict[str, str]:
        """A step record (as the store keeps it) as shown."""
        return self._fields(fields, _STEP_PAYLOADS, ())

    def attempt(self, attempt: Mapping[str, Any]) -> dict[str, Any]:
        """A failed attempt (attempt, startTime, endTime, error) as shown."""
        shown = dict(attempt)
        if self.active and "error" in shown:
            shown["error"] = self.value(shown["error"])
        return shown

    def exception(self, exc: BaseException) -> BaseException:
        """The exception as Celery may see it: `exc` when it shows no masked text, else one
        of the same type (or MaskedError) with the text masked, its context hidden."""
        if not self.texts:
            return exc
        shown, told = str(exc), repr(exc)
        if self.text(shown) == shown and self.text(told) == told:
            return exc
        masked = self.text(shown)
        replacement: BaseException
        try:
            replacement = type(exc)(masked)
            safe = self.text(repr(replacement)) == repr(replacement) \
                and self.text(str(replacement)) == str(replacement)
        except Exception:  # a type that takes other arguments, or shows them otherwise
            safe = False
        if not safe:
            replacement = MaskedError(f"{type(exc).__name__}: {masked}")
        replacement.__cause__ = None
        replacement.__suppress_context__ = True  # the real exception stays out of tracebacks
        return replacement.with_traceback(exc.__traceback__)

    def _fields(self, fields: Mapping[str, str], payloads: Iterable[str],
                texts: Iterable[str]) -> dict[str, str]:
        shown = dict(fields)
        if not self.active:
            return shown
        for name in payloads:
            if shown.get(name):
                shown[name] = json.dumps(self.value(json.loads(shown[name])),
                                         separators=(",", ":"), ensure_ascii=False)
        for name in texts:
            if shown.get(name):
                shown[name] = self.text(shown[name])
        if MASKED_FIELDS in shown:
            shown[MASKED_FIELDS] = json.dumps(sorted(self.names))
        return shown


NO_MASK = RunMask()


class MaskedError(Exception):
    """Stands for a step's exception whose text showed a masked value and whose type cannot
    be made again with the masked text."""


def masked_names(fields: Mapping[str, str]) -> frozenset[str]:
    """The names a run record says its run masks."""
    text = fields.get(MASKED_FIELDS)
    return frozenset(str(name) for name in json.loads(text)) if text else frozenset()


def run_mask(store: RunStore, run_id: str, run: Mapping[str, str] | None = None) -> RunMask:
    """The mask of a run; `run` is its record if the caller has read it already.

    A run without maskedFields costs one read of one field; one with them is read whole
    (record, variables and every step) to learn the masked values.
    """
    names = masked_names(run if run is not None else
                         store.get_run_fields(run_id, MASKED_FIELDS))
    if not names:
        return NO_MASK
    record, variables, steps = store.read_state(run_id, sorted(store.recorded_refs(run_id)))
    found: set[str] = set()
    for payload in _payloads(record, variables, steps.values()):
        _learn(payload, names, found, inside=False)
    return RunMask(names, tuple(sorted(found, key=lambda text: (-len(text), text))))


def masked_run_fields(store: RunStore, fields: Mapping[str, str]) -> dict[str, str]:
    """A run record as shown (its mask read from the store when it has one)."""
    return run_mask(store, fields.get("workflowId", ""), fields).run_fields(fields)


def masked_exception(store: RunStore, run_id: str, exc: BaseException) -> BaseException:
    """`exc` as Celery may see it (see RunMask.exception). When the mask cannot be read,
    a MaskedError without the message: the failure is still raised, its text is not."""
    try:
        return run_mask(store, run_id).exception(exc)
    except Exception:
        return MaskedError(f"{type(exc).__name__} (its message is not shown: the run's "
                           "masked values could not be read)")


def _payloads(run: Mapping[str, str], variables: Mapping[str, str],
              steps: Iterable[Mapping[str, str]]) -> Iterable[Any]:
    for name in _RUN_PAYLOADS:
        if run.get(name):
            yield json.loads(run[name])
    yield {name: json.loads(value) for name, value in variables.items()}
    for step in steps:
        for name in ("input", "output"):
            if step.get(name):
                yield json.loads(step[name])


def _learn(value: Any, names: frozenset[str], found: set[str], inside: bool) -> None:
    """Collect the texts of the scalars under masked names (iteratively: payloads can nest
    as deep as the store allows)."""
    pending = [(value, inside)]
    while pending:
        item, masked = pending.pop()
        if isinstance(item, dict):
            pending.extend((child, masked or key in names) for key, child in item.items())
        elif isinstance(item, list):
            pending.extend((child, masked) for child in item)
        elif masked and isinstance(item, str | int | float) and not isinstance(item, bool):
            text = _scalar_text(item)
            if len(text) >= MIN_SECRET_CHARS:
                found.add(text)


def _scalar_text(value: str | int | float) -> str:
    return value if isinstance(value, str) else json.dumps(value)
