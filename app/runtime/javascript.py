"""Conductor's `javascript` / `graaljs` evaluators, in an embedded sandboxed engine.

Each evaluation gets a fresh QuickJS context with a time and a memory limit and its
inputs bound as `$`; it has no I/O, no host objects and no access to Python. An
expression that loops forever or allocates without end fails with ScriptError and harms
nothing else. No Python `eval` anywhere.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

import quickjs

from app.errors import BatonError

TIME_LIMIT_SECONDS: Final = 2.0
MEMORY_LIMIT_BYTES: Final = 32 * 1024 * 1024

# Conductor's engines expose Java lists, and definitions written for them call
# `list.get(i)` and `list.size()`; these make such expressions run unchanged.
_PRELUDE: Final = """
Object.defineProperty(Array.prototype, 'get', {value: function (i) { return this[i]; }});
Object.defineProperty(Array.prototype, 'size', {value: function () { return this.length; }});
"""


class ScriptError(BatonError):
    """A script failed: a syntax or runtime error, or it went past its time or memory limit."""


def evaluate(
    expression: str,
    bindings: Any,
    *,
    time_limit: float = TIME_LIMIT_SECONDS,
    memory_limit: int = MEMORY_LIMIT_BYTES,
) -> Any:
    """Evaluate a script with `$` bound to `bindings`; returns its value as JSON data."""
    context = quickjs.Context()
    context.set_memory_limit(memory_limit)
    context.set_time_limit(time_limit)
    try:
        context.eval(_PRELUDE)
        context.eval("var $ = " + json.dumps(bindings, allow_nan=False) + ";")
        result = context.eval(expression)
    except quickjs.JSException as exc:
        raise ScriptError(_describe(exc, time_limit, memory_limit)) from None
    except (TypeError, ValueError) as exc:
        raise ScriptError(f"the script's input is not JSON: {exc}") from None
    return _to_json(result)


def _to_json(value: Any) -> Any:
    if isinstance(value, quickjs.Object):
        text = value.json()
        return None if text is None else json.loads(text)
    if isinstance(value, float) and value.is_integer() and not math.isinf(value):
        return int(value)
    return value


def _describe(exc: Exception, time_limit: float, memory_limit: int) -> str:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if first == "InternalError: interrupted":
        return f"script ran past its time limit of {time_limit:g}s"
    if first == "InternalError: out of memory":
        return f"script went past its memory limit of {memory_limit // (1024 * 1024)} MiB"
    return f"script failed: {first}"
