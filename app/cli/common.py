"""What the `baton` commands share: options with environment fallbacks, one-line errors,
reading input, choosing the Redis, and the small formatting helpers of their output.

Every failure a user can cause ends in one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click

from app import registry
from app.celery_app import reload_settings
from app.client import read_workflow
from app.compiler.plan import Plan, build_plan
from app.config import get_settings
from app.dsl.validate import check_definition
from app.errors import BatonError, DefinitionError, Problem
from app.loader import ensure_loaded
from app.payloads import InvalidPayload
from app.runtime.state import get_store

EXIT_FAILED = 1
"""A run failed or timed out, Redis cannot be reached, a run id is unknown."""
EXIT_INVALID = 2
"""The command was given something wrong: a definition, an input, an option."""

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option whose help names its environment variable."""
    return click.option(*decls, show_envvar=True, **kwargs)


def json_option(keys: str) -> Callable[[F], F]:
    return option(
        "--json", "as_json", is_flag=True, envvar="BATON_JSON",
        help=f"Print one JSON value on stdout: {keys}",
    )


redis_option = option(
    "--redis-url", envvar=["REDIS_URL", "BATON_REDIS_URL"], metavar="URL",
    help="The Redis of the workers: broker, result backend and run store.",
)
timeout_option = option(
    "--timeout", type=click.FloatRange(min=0), default=None, envvar="BATON_TIMEOUT",
    metavar="SECONDS", help="Seconds to wait for the run to end (default: no limit).",
)


def input_options(command: F) -> F:
    """--input JSON and -i KEY=VALUE, as `parse_input` reads them."""
    command = option(
        "-i", "items", multiple=True, metavar="KEY=VALUE", envvar="BATON_INPUT_FIELDS",
        help="One input field (the value is JSON if it parses, else a string); repeatable.",
    )(command)
    return option(
        "--input", "input_json", envvar="BATON_INPUT", metavar="JSON",
        help="The input as a JSON object (-i fields are added to it).",
    )(command)


def guard(action: Callable[[], T]) -> T:
    """Run an action, turning Baton's errors into one line on stderr (a line per problem)."""
    try:
        return action()
    except DefinitionError as exc:
        for problem in exc.problems:
            click.echo(error_line(problem), err=True)
        sys.exit(EXIT_INVALID)
    except InvalidPayload as exc:  # an input or output given on the command line
        fail(str(exc), EXIT_INVALID)
    except BatonError as exc:
        fail(str(exc), EXIT_FAILED)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"baton: {one_line(message)}", err=True)
    sys.exit(code)


def load_checked(
    file: str, version: int | None = None, strict: bool | None = None
) -> tuple[Plan, list[Problem]]:
    """The definition in a file (or registered under a name), validated, as a plan; and
    its warnings (errors when `strict`)."""
    ensure_loaded()
    loaded = read_workflow(file, version, strict=strict)
    transformations = registry.transformations()
    warnings = check_definition(loaded.definition, transformations, strict=strict,
                                warnings=loaded.warnings)
    return build_plan(loaded.definition, transformations, validated=True), warnings


strict_option = option(
    "--strict", is_flag=True, envvar="BATON_STRICT",
    help="Refuse a definition with warnings too (e.g. a ${ref...} naming an unknown task, "
    "which Conductor reads as null).",
)


def error_line(problem: Problem, where: str = "") -> str:
    """A problem that stops the command, as every error of `baton` starts: `baton: `."""
    return f"baton: {where}{one_line(str(problem))}"


def warning_line(problem: Problem) -> str:
    return f"warning: {problem}"


def _too_deep() -> str:
    # Python's JSON parser recurses: text nested about a thousand deep exhausts the stack
    # before the payload check (max_json_depth) can name the path
    return f"nested too deeply to parse (the limit is {get_settings().max_json_depth} levels)"


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    """An option's value as a JSON object, or one line on stderr and exit 2."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{option}: malformed JSON: {exc.msg} at column {exc.colno}", EXIT_INVALID)
    except RecursionError:
        fail(f"{option}: {_too_deep()}", EXIT_INVALID)
    if not isinstance(parsed, dict):
        fail(f"{option}: must be a JSON object", EXIT_INVALID)
    return parsed


def parse_input(input_json: str | None, items: Sequence[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if input_json:
        data.update(parse_json_object(input_json, "--input"))
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"-i {item}: expected KEY=VALUE", EXIT_INVALID)
        try:
            data[key] = json.loads(raw)
        except json.JSONDecodeError:
            data[key] = raw
        except RecursionError:
            fail(f"-i {key}: {_too_deep()}", EXIT_INVALID)
    return data


_SCHEMES = ("redis://", "rediss://", "unix://")


def use_redis(url: str | None, command: str) -> None:
    """Point the client at the workers' Redis; only `baton run` has a default of its own."""
    if not url:
        fail(
            f"REDIS_URL is not set: `baton {command}` needs the Redis its workers use "
            "(set REDIS_URL or pass --redis-url; only `baton run` starts a private one)",
            EXIT_INVALID,
        )
    if not url.startswith(_SCHEMES):
        fail(f"REDIS_URL: {url!r} is not a redis://, rediss:// or unix:// URL", EXIT_INVALID)
    if url != get_settings().redis_url:
        # nothing has connected yet: the settings, the Celery app and the store follow it
        os.environ["REDIS_URL"] = url
        reload_settings()
        get_store.cache_clear()


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


# -- formatting -------------------------------------------------------------------------------


def millis(moment: datetime | None) -> int | None:
    """A time as epoch milliseconds, as Conductor's JSON gives times."""
    return None if moment is None else round(moment.timestamp() * 1000)


def span_ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000)


def human_time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def human_duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 60_000:
        return f"{ms / 1000:.2f}s"
    minutes, seconds = divmod(ms // 1000, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, as `docker ps` and `rq info` print them."""
    columns = zip(headers, *rows, strict=False)
    widths = [max(len(str(cell)) for cell in column) for column in columns]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        .rstrip()
        for line in (headers, *rows)
    ]


def one_line(text: str, width: int | None = None) -> str:
    """A text's lines joined into one, shortened to `width` characters when given."""
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if width is None or len(joined) <= width else joined[: width - 1] + "…"


def now() -> datetime:
    return datetime.now(UTC)
