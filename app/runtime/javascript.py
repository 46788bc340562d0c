"""Conductor's `javascript` / `graaljs` evaluators, in an embedded sandboxed engine.

Each evaluation gets a fresh QuickJS context with a time and a memory limit and its
inputs bound as `$`; it has no I/O, no host objects and no access to Python. The result
is turned into JSON inside the engine, in the same evaluation, so a `toJSON` or a getter
that loops or allocates without end is held to the same limits. Every failure (syntax,
runtime, cyclic or BigInt result, time, memory, stack, input that is not JSON) is a
ScriptError. No Python `eval` anywhere.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

import quickjs

from app.config import get_settings
from app.errors import BatonError
from app.payloads import InvalidPayload, check_payload

# Conductor's engines expose Java lists, and definitions written for them call
# `list.get(i)` and `list.size()`; these make such expressions run unchanged.
_PRELUDE: Final = """
Object.defineProperty(Array.prototype, 'get', {value: function (i) { return this[i]; }});
Object.defineProperty(Array.prototype, 'size', {value: function () { return this.length; }});
"""

# The script runs through an indirect eval, which gives the completion value of a statement
# sequence as evaluating it directly would; JSON.stringify is taken before the script runs,
# so a script that replaces it cannot change how its result is written.
_RUN: Final = "(function (stringify) {{ return stringify((0, eval)({source})); }})(JSON.stringify)"


_FAILED: Final = "script failed: "


class ScriptError(BatonError):
    """A script failed: a syntax or runtime error, or it went past its time or memory limit."""


class ScriptOverLimit(ScriptError):
    """A script went past its time or memory limit (which a retry may not)."""


def evaluate(
    expression: str,
    bindings: Any,
    *,
    time_limit: float | None = None,
    memory_limit: int | None = None,
    where: str | None = None,
) -> Any:
    """Evaluate a script with `$` bound to `bindings`; returns its value as JSON data.

    The limits default to the settings `script_time_limit` and `js_memory_mib`; `where`
    (the definition field the script came from) prefixes every error message.
    """
    settings = get_settings()
    if time_limit is None:
        time_limit = settings.script_time_limit
    if memory_limit is None:
        memory_limit = settings.js_memory_mib * 1024 * 1024
    prefix = f"{where}: " if where else ""
    try:
        given = check_payload(bindings, "$", max_depth=settings.max_json_depth)
    except InvalidPayload as exc:
        raise ScriptError(f"{prefix}the script's input is not JSON: {exc}") from None
    context = quickjs.Context()
    context.set_memory_limit(memory_limit)
    context.set_time_limit(time_limit)
    try:
        context.eval(_PRELUDE)
        # parsed, not spliced in as a literal: a "__proto__" key stays a plain key
        context.eval(f"var $ = JSON.parse({json.dumps(given)});")
        text = context.eval(_RUN.format(source=json.dumps(expression)))
    except quickjs.JSException as exc:
        text = _describe(exc, expression, time_limit, memory_limit)
        kind = ScriptError if text.startswith(_FAILED) else ScriptOverLimit
        raise kind(prefix + text) from None
    except Exception as exc:  # the engine's own failures (e.g. its stack) are script errors too
        raise ScriptError(f"{prefix}script failed: {type(exc).__name__}: {exc}") from None
    if text is None:  # undefined, a function or a symbol
        return None
    try:
        result = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        raise ScriptError(f"{prefix}script failed: its result nests too deeply") from None
    if isinstance(result, float) and result.is_integer() and not math.isinf(result):
        return int(result)
    return result


def _describe(exc: Exception, expression: str, time_limit: float, memory_limit: int) -> str:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    over_memory = f"script went past its memory limit of {memory_limit // (1024 * 1024)} MiB"
    if first == "InternalError: interrupted":
        return f"script ran past its time limit of {time_limit:g}s"
    if first == "InternalError: out of memory":
        return over_memory
    if first == "null":
        # When the engine runs out of memory with no room left for the error object
        # itself, it throws null instead; only a script that says `throw` can throw
        # null of its own accord.
        if "throw" not in expression:
            return over_memory
        return f"{_FAILED}it threw null, or {over_memory.removeprefix('script ')}"
    return f"{_FAILED}{first}"
