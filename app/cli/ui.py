"""`baton ui`: serve the workflow view (app.ui) over the workers' Redis, beside Flower.

Asks for HTTP basic auth (BATON_UI_AUTH=user:password, as Flower's --basic-auth) and
refuses to start without it, unless it listens on 127.0.0.1 only and --no-auth is given.
"""

from __future__ import annotations

from typing import Any, Final

import click

from app.cli.common import EXIT_INVALID, fail, guard, option, redis_option, use_redis

# as app.ui.server has them; the web stack itself is imported only when the view starts
LOOPBACK: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080


def credentials_for(auth: str | None, no_auth: bool, host: str) -> Any:
    """The credentials to ask for (app.ui.security.Credentials), or None when the view may
    run open; fails in one line."""
    from app.ui.security import AuthConfigError, Credentials

    if auth:
        try:
            return Credentials.parse(auth)
        except AuthConfigError as exc:
            fail(str(exc), EXIT_INVALID)
    if not no_auth:
        fail("BATON_UI_AUTH is not set: set it to user:password (or, on 127.0.0.1 only, pass "
             "--no-auth)", EXIT_INVALID)
    if host != LOOPBACK:
        fail(f"--no-auth: only with --host {LOOPBACK} (the view changes runs); set "
             "BATON_UI_AUTH=user:password to listen on " + host, EXIT_INVALID)
    return None


@click.command()
@option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
        envvar="BATON_UI_PORT", help="The port to listen on.")
@option("--host", default=LOOPBACK, show_default=True, envvar="BATON_UI_HOST",
        help="The address to listen on (0.0.0.0 for every interface).")
@option("--auth", envvar="BATON_UI_AUTH", metavar="USER:PASSWORD",
        help="HTTP basic auth every request must carry (as Flower's --basic-auth).")
@option("--no-auth", is_flag=True, help=f"Serve without auth (only on {LOOPBACK}).")
@option("--reindex", is_flag=True, help="First index every run in the store (runs written "
        "before the run index existed), then serve.")
@option("--flower-url", envvar="BATON_FLOWER_URL", metavar="URL",
        help="Flower's base URL: each step links to its task there.")
@redis_option
def ui(port: int, host: str, auth: str | None, no_auth: bool, reindex: bool,
       flower_url: str | None, redis_url: str | None) -> None:
    """Serve the workflow view: runs, their graphs and timelines, live, with actions.

    \b
    Example:
      BATON_UI_AUTH=admin:secret baton ui --port 8080 --flower-url http://localhost:5555
    """
    from app.ui.server import config_from_env, serve

    credentials = credentials_for(auth, no_auth, host)
    use_redis(redis_url, "ui")
    if reindex:
        from app.runtime.state import get_store

        found = guard(lambda: get_store().index_existing_runs())
        click.echo(f"indexed {found} runs", err=True)
    click.echo(f"workflow view on http://{host}:{port}/runs", err=True)
    serve(config_from_env(credentials, flower_url), host, port)
