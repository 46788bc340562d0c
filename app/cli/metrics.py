"""`baton metrics`: a Prometheus exporter of Baton's metrics, serving `/metrics` over HTTP.

It only reads: every figure is in Redis (app.metrics), so exporters may be started,
stopped and run side by side anywhere without losing or doubling a count.
"""

from __future__ import annotations

import threading

import click

from app.cli.common import EXIT_FAILED, fail, guard, option, redis_option, use_redis
from app.loader import ensure_loaded

DEFAULT_PORT = 9808


@click.command()
@option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
        envvar="BATON_METRICS_PORT", help="The port to serve /metrics on.")
@option("--host", default="0.0.0.0", show_default=True, envvar="BATON_METRICS_HOST",
        help="The address to listen on.")
@redis_option
def metrics(port: int, host: str, redis_url: str | None) -> None:
    """Serve Baton's Prometheus metrics on http://HOST:PORT/metrics until stopped.

    Runs and steps by workflow, transformation and status (counters and duration
    histograms kept in Redis by every worker), steps waiting, and queue depths.

    \b
    Example:
      baton metrics --port 9808
    """
    from prometheus_client import start_http_server

    from app.metrics import metrics_registry

    use_redis(redis_url, "metrics")
    guard(ensure_loaded)  # the queues of BATON_TRANSFORMATIONS are shown too
    try:
        start_http_server(port, addr=host, registry=metrics_registry())
    except OSError as exc:
        fail(f"--port: cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_FAILED)
    click.echo(f"serving Baton's metrics on http://{host}:{port}/metrics", err=True)
    try:
        threading.Event().wait()  # the server's threads serve; this one waits for a signal
    except KeyboardInterrupt:
        pass  # Ctrl-C: a normal way to stop it
