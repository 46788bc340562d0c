"""The workflow view (`baton ui`): a live web view of runs beside Flower, over the run store.

Flower shows Celery's tasks; this shows Baton's runs: a runs list with filters and pages
(through the store's run index, app.store.index), a run page with the definition's graph
coloured by step status, a timeline of every step and attempt, each step's input, output,
error and traceback, and the lifecycle actions (pause, resume, cancel, retry, rerun,
restart, complete a waiting step); and the registered definitions with their graphs.

Design notes:
- Starlette app served by uvicorn (app.ui.server); pages are Jinja templates, the run
  page's live parts plain JavaScript (static/run.js) rendering a JSON snapshot: no build
  step, no CDN, everything ships in the package.
- Live: one server-sent event stream per open page; the server reads the run at most every
  0.5 s and sends only what changed (app.ui.live, app.ui.views.changes). The browser never
  polls the server.
- Reads go through the store and the client's masking, so the view shows what
  `baton status` shows; actions call the client's lifecycle calls, nothing of their own.
- Security: HTTP basic auth (BATON_UI_AUTH, as Flower's --basic-auth) and a signed
  double-submit CSRF token checked on every POST with an Origin check (app.ui.security).
- The graph is laid out here (app.ui.layout) from app.graph's nodes and edges.
Not yet: paging of a run with thousands of steps (the page draws them all, the graph
stops at layout.MAX_NODES), and a search over inputs or outputs.
"""

from app.ui.app import UiConfig, create_app

__all__ = ["UiConfig", "create_app"]
