"""Serving the workflow view with uvicorn: in the foreground (`baton ui`), or in a thread
beside a run (`baton run --ui`).

Knows nothing of the routes (app.ui.app); only how the app is configured from the
environment and how the server is started and stopped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Final

import uvicorn

from app.runtime.state import get_store
from app.ui.app import UiConfig, create_app
from app.ui.security import Credentials

LOOPBACK: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080
"""Both named again in app.cli.ui, which does not import the web stack to show its help."""
GRACE_SECONDS: Final = 3
"""Open live streams end at shutdown after this long; a page's EventSource reconnects."""


def config_from_env(credentials: Credentials | None, flower_url: str | None = None) -> UiConfig:
    secret = os.environ.get("BATON_UI_SECRET")
    return UiConfig(store=get_store, credentials=credentials,
                    flower_url=flower_url or os.environ.get("BATON_FLOWER_URL") or None,
                    csrf_secret=secret.encode() if secret else None)


def _server(config: UiConfig, host: str, port: int) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(
        create_app(config), host=host, port=port, log_level="warning",
        timeout_graceful_shutdown=GRACE_SECONDS, lifespan="off"))


def serve(config: UiConfig, host: str, port: int) -> None:
    """Serve until interrupted."""
    _server(config, host, port).run()


@contextlib.contextmanager
def serving(config: UiConfig, host: str = LOOPBACK, port: int = DEFAULT_PORT,
            timeout: float = 10) -> Iterator[str]:
    """Serve in a thread meanwhile; yields the base URL once the server listens."""
    server = _server(config, host, port)
    thread = threading.Thread(target=server.run, name="baton-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise OSError(f"the workflow view could not listen on {host}:{port}")
        time.sleep(0.01)  # waiting for uvicorn's own startup flag
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=GRACE_SECONDS + 5)


@contextlib.contextmanager
def beside_run(enabled: bool) -> Iterator[None]:
    """`baton run --ui`: the view on 127.0.0.1 (BATON_UI_PORT, default 8080) while the run
    runs, without auth (loopback only), over the Redis the run uses; on a terminal it stays
    up after the run until Ctrl-C, so the ended run can be looked at."""
    if not enabled:
        yield
        return
    port = int(os.environ.get("BATON_UI_PORT") or DEFAULT_PORT)
    try:
        context = serving(config_from_env(None), LOOPBACK, port)
        base = context.__enter__()
    except OSError as exc:
        print(f"baton: no workflow view: {exc}", file=sys.stderr)
        yield
        return
    print(f"workflow view: {base}/runs", file=sys.stderr)
    try:
        yield
    finally:
        if sys.stderr.isatty() and sys.stdin.isatty():
            print("the run has ended; the workflow view stays up until Ctrl-C", file=sys.stderr)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        context.__exit__(None, None, None)
