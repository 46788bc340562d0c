"""The scripts of a definition, compiled at validation without running them.

JavaScript (loopCondition, caseExpression, a SWITCH's or INLINE's `javascript`/`graaljs`
expression, a LAMBDA's scriptExpression) is parsed by QuickJS's Function constructor, which
compiles a function body and does not call it, in a fresh context with small time and
memory limits. jq (JSON_JQ_TRANSFORM's queryExpression) is compiled in the jq sandbox's
evaluator process, never in this one. Only literal scripts are checked: one holding a
`${...}` expression is known only at run time. No Celery or Redis here.
"""

from __future__ import annotations

import json
import re
from typing import Final

import quickjs

from app.config import get_settings

JAVASCRIPT_EVALUATORS: Final = frozenset({"javascript", "graaljs"})

_COMPILE_SECONDS: Final = 0.5
"""Time a parse may take: a body that closes the Function constructor's wrapper could run."""
_COMPILE_MEMORY: Final = 16 * 1024 * 1024
_BODY_FIRST_LINE: Final = 3
"""QuickJS compiles `(function anonymous(\\n) {\\n` + body + `\\n})`: the body's line 1 is 3."""
_LOCATION: Final = re.compile(r"^\s*at <input>:(\d+)")
_END_TOKEN: Final = "unexpected token in expression: '}'"


def literal(value: object) -> str | None:
    """The script if it is a literal string (no `${...}` to resolve first), else None."""
    return value if isinstance(value, str) and "${" not in value else None


def javascript_problem(source: str) -> str | None:
    """Why `source` is not valid JavaScript, with its line; None if it compiles."""
    settings = get_settings()
    context = quickjs.Context()
    context.set_time_limit(min(_COMPILE_SECONDS, settings.script_time_limit))
    context.set_memory_limit(_COMPILE_MEMORY)
    try:
        whole = context.eval(_COMPILE.format(source=json.dumps(source)))
    except quickjs.JSException as exc:
        return _describe(str(exc), source)
    except Exception as exc:  # the engine's own failures (its stack) are the script's too
        return f"does not compile: {type(exc).__name__}: {exc}"
    return None if whole else _ESCAPED


# The Function constructor splices the body into its wrapper's text, so a body that closes
# the wrapper early compiles (and runs) as something else; its text then differs from the
# body's, and as a script of its own it is a syntax error.
_COMPILE: Final = ("(function (source) {{ return String(new Function(source)) === "
                   "'function anonymous(\\n) {{\\n' + source + '\\n}}'; }})({source})")
_ESCAPED: Final = "SyntaxError: a '}' or ')' closes more than the script opens"


def _describe(text: str, source: str) -> str:
    lines = text.splitlines()
    first = lines[0] if lines else "SyntaxError"
    kind, _, message = first.partition(": ")
    if kind != "SyntaxError":  # only a body that escaped its wrapper runs at all
        return _ESCAPED
    found = next((m for m in map(_LOCATION.match, lines[1:]) if m), None)
    if found is None:
        return first
    line = int(found.group(1)) - _BODY_FIRST_LINE + 1
    if line > source.count("\n") + 1:
        message = "unexpected end of script" if message == _END_TOKEN else message
        return f"SyntaxError at the end of the script: {message}"
    return f"SyntaxError at line {max(line, 1)}: {message}"


def jq_problem(program: str) -> str | None:
    """Why a jq program does not compile, in one line; None if it does."""
    from app.runtime import jq_sandbox  # the sandbox's evaluator process compiles it

    found = jq_sandbox.compile_check(program)
    if found is None:
        return None
    first = found.splitlines()[0].removeprefix("error: ").rstrip(":")
    return "jq: " + first.replace(" at <top-level>, ", " at ")
