"""The scripts of a definition, compiled at validation without running them.

JavaScript (loopCondition, caseExpression, a SWITCH's or INLINE's `javascript`/`graaljs`
expression, a LAMBDA's scriptExpression) is parsed by QuickJS as a function body, in a
fresh context with small time and memory limits, and none of it runs. jq
(JSON_JQ_TRANSFORM's queryExpression) is compiled in the jq sandbox's evaluator process,
never in this one. Only literal scripts are checked: one holding a `${...}` expression is
known only at run time. No Celery or Redis here.
"""

from __future__ import annotations

import re
from typing import Final

import quickjs

from app.config import get_settings

JAVASCRIPT_EVALUATORS: Final = frozenset({"javascript", "graaljs"})

_COMPILE_SECONDS: Final = 0.5
"""Time a parse may take (parsing is linear; this is a backstop)."""
_COMPILE_MEMORY: Final = 16 * 1024 * 1024
_BODY_FIRST_LINE: Final = 3
"""The body's first line in the programs below."""
_LOCATION: Final = re.compile(r"^\s*at <input>:(\d+)")
_END_TOKEN: Final = "unexpected token in expression: "


def literal(value: object) -> str | None:
    """The script if it is a literal string (no `${...}` to resolve first), else None."""
    return value if isinstance(value, str) and "${" not in value else None


def javascript_problem(source: str, *, function_body: bool = False) -> str | None:
    """Why `source` is not valid JavaScript, with its line; None if it compiles.

    `function_body`: the source runs as a function's body (a LAMBDA's), so it may `return`;
    otherwise it runs as a script (as the other fields do), where `return` is an error.
    """
    settings = get_settings()
    context = quickjs.Context()
    context.set_time_limit(min(_COMPILE_SECONDS, settings.script_time_limit))
    context.set_memory_limit(_COMPILE_MEMORY)
    for at, wrapper in enumerate(_WRAPPERS if function_body else (_BLOCK, *_WRAPPERS)):
        try:
            context.eval(wrapper.format(source=source))
        except quickjs.JSException as exc:
            text = str(exc)
            if text.startswith(_PARSED):
                continue
            return _describe(text, source) if at == 0 else _ESCAPED
        except Exception as exc:  # the engine's own failures (its stack) are the script's too
            return f"does not compile: {type(exc).__name__}: {exc}"
    return None


# Each program throws before anything after its first line can run: a script is parsed as a
# whole before it runs, so this compiles the body and runs none of it. A body that closes its
# wrapper early could still parse in one wrapper, but not in both (their ends differ); as a
# script of its own it is a syntax error.
_PARSED: Final = "baton:parsed"
_WRAPPERS: Final = (
    f'throw "{_PARSED}";\n(function () {{{{\n{{source}}\n}}}});',
    f'throw "{_PARSED}";\nfunction body() {{{{\n{{source}}\n}}}}',
)
_BLOCK: Final = f'throw "{_PARSED}";\n{{{{\n{{source}}\n}}}}'
"""A script's statements in a block: as in a script, and unlike in a function, no `return`."""
_ESCAPED: Final = "SyntaxError: a '}' or ')' closes more than the script opens"


def _describe(text: str, source: str) -> str:
    lines = text.splitlines()
    first = lines[0] if lines else "SyntaxError"
    kind, _, message = first.partition(": ")
    found = next((m for m in map(_LOCATION.match, lines[1:]) if m), None)
    if kind != "SyntaxError" or found is None:
        return f"does not compile: {first}"
    line = int(found.group(1)) - _BODY_FIRST_LINE + 1
    if line > source.count("\n") + 1:
        # the token is the wrapper's own closing bracket, not the user's
        message = "unexpected end of script" if message.startswith(_END_TOKEN) else message
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
