"""The lifecycle actions of the run page: each a POST that calls the client's lifecycle call.

pause, resume, cancel, retry, restart, rerun (from a step) and complete (a WAIT or HUMAN
step), exactly as `baton pause` and its kin do (app.client.WorkflowRun). Every POST passes
the CSRF check first (app.ui.security). A form gets a redirect back to the run page with a
notice or an error; a script that asks for JSON gets {"ok": ..., "message": ...}.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from app.client import WorkflowRun, get_run
from app.errors import BatonError
from app.ui.security import CSRF_FIELD, CsrfTokens

MAX_FORM_BYTES: Final = 1_000_000


class ActionError(ValueError):
    """A form that names no step, or gives an output that is not a JSON object."""


def _step(form: Mapping[str, str]) -> str:
    step = form.get("step", "").strip()
    if not step:
        raise ActionError("step: choose a step")
    return step


def _output(form: Mapping[str, str]) -> dict[str, Any]:
    text = form.get("output", "").strip() or "{}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ActionError(f"output: malformed JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise ActionError("output: must be a JSON object")
    return value


ACTIONS: Final[dict[str, tuple[Callable[[WorkflowRun, Mapping[str, str]], Any], str]]] = {
    "pause": (lambda run, form: run.pause(), "paused"),
    "resume": (lambda run, form: run.resume(), "resumed"),
    "cancel": (lambda run, form: run.cancel(form.get("reason") or "cancelled from the UI"),
               "cancelled"),
    "retry": (lambda run, form: run.retry(), "retrying"),
    "restart": (lambda run, form: run.restart(), "restarted"),
    "rerun": (lambda run, form: run.rerun(_step(form)), "rerunning"),
    "complete": (lambda run, form: run.complete_step(_step(form), _output(form)),
                 "step completed"),
}


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the only kind the page sends), last value of each name."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ActionError(f"form: over {MAX_FORM_BYTES} bytes")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _answer(request: Request, run_id: str, ok: bool, message: str, status: int) -> Response:
    if _wants_json(request):
        return JSONResponse({"ok": ok, "message": message}, status_code=status)
    if status == 403:
        return Response(message, status_code=status, media_type="text/plain")
    query = urlencode({"notice" if ok else "error": message})
    return RedirectResponse(f"/runs/{run_id}?{query}", status_code=303)


async def perform(request: Request, tokens: CsrfTokens,
                  call: Callable[[Callable[[], Any]], Any]) -> Response:
    """The POST /runs/{run_id}/actions/{action} route. `call` runs blocking work off the
    event loop (the store and the broker are reached synchronously)."""
    run_id, action = request.path_params["run_id"], request.path_params["action"]
    try:
        form = await read_form(request)
    except ActionError as exc:
        return _answer(request, run_id, False, str(exc), 400)
    refusal = tokens.refusal(request, form.get(CSRF_FIELD))
    if refusal is not None:
        return _answer(request, run_id, False, refusal, 403)
    if action not in ACTIONS:
        return _answer(request, run_id, False, f"action: unknown action {action!r}", 404)
    act, done = ACTIONS[action]

    def work() -> None:
        act(get_run(run_id), form)

    try:
        await call(work)
    except ActionError as exc:
        return _answer(request, run_id, False, str(exc), 400)
    except BatonError as exc:
        return _answer(request, run_id, False, f"{action}: {exc}", 409)
    return _answer(request, run_id, True, f"{action}: {done}", 200)
