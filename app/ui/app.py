"""The workflow view's web app (Starlette): runs list, run page, live stream, definitions.

Routes (all behind basic auth when credentials are set):
  GET  /                      -> /runs
  GET  /runs                  the runs list (filters and pages as query parameters)
  GET  /api/runs              the same page as JSON
  GET  /runs/{id}             the run page: graph, timeline, steps, actions
  GET  /api/runs/{id}         the run's snapshot as JSON
  GET  /runs/{id}/events      the run's live stream (text/event-stream, app.ui.live)
  POST /runs/{id}/actions/{a} a lifecycle action (app.ui.actions)
  GET  /definitions           registered workflows and their versions
  GET  /definitions/{name}/{version}  one definition's graph and JSON
  GET  /static/...            the page's own CSS, JS and icon (no CDN, no build step)
The store is reached synchronously (redis-py): routes that read it run in a worker thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from app.dsl.validate import parse_definition
from app.errors import BatonError
from app.graph import STATUS_COLOURS, build_graph
from app.runtime.masking import masked_run_fields
from app.store import RunStatus, RunStore
from app.store.index import MAX_PAGE, Cursor, RunPage, RunQuery
from app.ui import actions, live, views
from app.ui.layout import to_svg
from app.ui.security import CSRF_FIELD, BasicAuth, Credentials, CsrfTokens, set_csrf_cookie

DEFAULT_PAGE: Final = 50


@dataclass
class UiConfig:
    """What one instance of the view is given."""

    store: Any
    """A callable returning the RunStore (the process's, app.runtime.state.get_store)."""
    credentials: Credentials | None
    flower_url: str | None = None
    csrf_secret: bytes | None = None
    poll_seconds: float = live.POLL_SECONDS
    tokens: CsrfTokens = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = CsrfTokens(self.csrf_secret)


class QueryError(ValueError):
    """A query parameter that cannot be read; its message is `name: what is wrong`."""


def _time(name: str, text: str) -> int:
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{name}: {text!r} is not a time (epoch ms, or ISO 8601 such as "
                         "2026-01-31T12:00, read as UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_query(params: Any) -> RunQuery:
    """A RunQuery from the list's query parameters; QueryError for one that is wrong."""
    status = params.get("status") or None
    if status is not None and status not in RunStatus.__members__:
        raise QueryError(f"status: unknown status {status!r} (one of "
                         f"{', '.join(s.value for s in RunStatus)})")
    limit_text = params.get("limit") or str(DEFAULT_PAGE)
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise QueryError(f"limit: {limit_text!r} is not a number from 1 to {MAX_PAGE}")
    after = None
    if params.get("after"):
        try:
            after = Cursor.parse(params["after"])
        except ValueError as exc:
            raise QueryError(f"after: {exc}") from None
    return RunQuery(
        status=RunStatus(status) if status else None,
        workflow=(params.get("workflow") or "").strip() or None,
        correlation_id=(params.get("correlation") or "").strip() or None,
        since_ms=_time("since", params["since"]) if params.get("since") else None,
        until_ms=_time("until", params["until"]) if params.get("until") else None,
        limit=int(limit_text),
        after=after,
    )


def summary(store: RunStore, record: dict[str, str]) -> dict[str, Any]:
    shown = masked_run_fields(store, record) if record.get("maskedFields") else record
    doc = views.run_document(shown)
    start, end = doc.get("startTime"), doc.get("endTime")
    doc["durationMs"] = end - start if start is not None and end is not None else None
    doc.pop("input", None)
    doc.pop("output", None)
    return doc


def page_document(store: RunStore, page: RunPage) -> dict[str, Any]:
    return {"runs": [summary(store, record) for record in page.runs], "total": page.total,
            "next": str(page.next) if page.next else None}


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.PackageLoader("app.ui", "templates"),
                             autoescape=True)
    env.filters["ms_time"] = lambda ms: "-" if ms is None else datetime.fromtimestamp(
        ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    env.filters["duration"] = _duration
    return Jinja2Templates(env=env)


def _duration(ms: int | None) -> str:
    """A run's length as the list shows it: seconds under a minute, else minutes."""
    if ms is None:
        return "-"
    return f"{ms / 1000:.2f}s" if ms < 60_000 else f"{ms // 60_000}m{ms // 1000 % 60:02d}s"


def _status_css() -> str:
    """The graph's node colours per step status, shared with app.graph's renderings."""
    rules = [f"svg.graph .node.st-{status} rect {{ fill: {fill}; stroke: {stroke}; }} "
             f".chip.st-{status}, .bar.st-{status} {{ background: {fill}; fill: {fill}; "
             f"border-color: {stroke}; stroke: {stroke}; }}"
             for status, (fill, stroke) in STATUS_COLOURS.items()]
    return "\n".join(rules)


def create_app(config: UiConfig) -> Any:
    """The ASGI app: Starlette behind basic auth (none when `config.credentials` is None)."""
    templates = _templates()
    tokens = config.tokens

    def render(request: Request, name: str, context: dict[str, Any],
               status: int = 200) -> Response:
        token, new = tokens.token_for(request)
        context = {**context, "csrf_field": CSRF_FIELD, "csrf_token": token,
                   "status_css": _status_css(), "statuses": [s.value for s in RunStatus]}
        response = templates.TemplateResponse(request, name, context, status_code=status)
        if new:
            set_csrf_cookie(response, token)
        return response

    def home(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=307)

    def runs_page(request: Request) -> Response:
        store = config.store()
        params = request.query_params
        try:
            query = parse_query(params)
            page = page_document(store, store.query_runs(query))
            error = None
        except QueryError as exc:
            page, error = {"runs": [], "total": None, "next": None}, str(exc)
        filters = {name: params.get(name, "") for name in
                   ("status", "workflow", "correlation", "since", "until", "limit")}
        following = None
        if page["next"]:
            following = str(request.url.include_query_params(after=page["next"]))
        return render(request, "runs.html", {
            "page": page, "error": error, "filters": filters, "next_url": following,
            "workflows": store.workflow_names(),  # registered ones, as suggestions
        }, status=400 if error else 200)

    def runs_api(request: Request) -> Response:
        store = config.store()
        try:
            query = parse_query(request.query_params)
        except QueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(page_document(store, store.query_runs(query)))

    def run_context(run_id: str) -> tuple[dict[str, Any] | None, Any]:
        store = config.store()
        digest = store.get_run_fields(run_id, "plan").get("plan")
        try:
            definition = views.load_definition(store, digest)
        except BatonError:
            definition = None  # drawn as unknown; the steps are still shown
        refs = views.definition_refs(definition)
        return views.snapshot(store, run_id, refs, config.flower_url), definition

    def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        snapshot, definition = run_context(run_id)
        if snapshot is None:
            return render(request, "missing.html", {"run_id": run_id}, status=404)
        return render(request, "run.html", {
            "run": snapshot["run"], "snapshot": snapshot,
            "graph_svg": views.graph_svg(definition),
            "rerun_refs": views.top_level_refs(definition),
            "flower_url": config.flower_url,
            "notice": request.query_params.get("notice"),
            "error": request.query_params.get("error"),
        })

    def run_api(request: Request) -> Response:
        snapshot, _ = run_context(request.path_params["run_id"])
        if snapshot is None:
            return JSONResponse({"error": "no such run (never submitted, or expired)"},
                                status_code=404)
        return JSONResponse(snapshot)

    async def run_events(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        _, definition = await run_in_threadpool(run_context, run_id)
        refs = views.definition_refs(definition)

        def read() -> dict[str, Any] | None:
            return views.snapshot(config.store(), run_id, refs, config.flower_url)

        stream = live.run_events(request, read, views.changes, config.poll_seconds)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    async def run_action(request: Request) -> Response:
        return await actions.perform(request, tokens, run_in_threadpool)

    def definitions_page(request: Request) -> Response:
        return render(request, "definitions.html",
                      {"catalogue": config.store().workflow_catalogue()})

    def definition_page(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params["version"]
        text = config.store().workflow_versions(name).get(str(version))
        if text is None:
            return render(request, "missing.html", {"definition": f"{name} v{version}"},
                          status=404)
        document = json.loads(text)
        svg = to_svg(build_graph(parse_definition(document)))
        return render(request, "definition.html", {
            "name": name, "version": version, "graph_svg": svg,
            "definition_json": json.dumps(document, indent=2),
        })

    app = Starlette(routes=[
        Route("/", home),
        Route("/runs", runs_page),
        Route("/api/runs", runs_api),
        Route("/runs/{run_id}", run_page),
        Route("/api/runs/{run_id}", run_api),
        Route("/runs/{run_id}/events", run_events),
        Route("/runs/{run_id}/actions/{action}", run_action, methods=["POST"]),
        Route("/definitions", definitions_page),
        Route("/definitions/{name}/{version:int}", definition_page),
        Mount("/static", StaticFiles(packages=[("app.ui", "static")]), name="static"),
    ])
    return BasicAuth(app, config.credentials)
