"""``zerolabel serve``: the backend's production server (waitress, threads, bounded requests).

Registered as a ``zerolabel.commands`` entry point, so the library's CLI offers it without
importing this package; ``python -m zerolabel_backend`` runs the same command.

waitress reads each request whole in its I/O thread before a worker thread sees it, so slow
clients cost a connection, not a thread; the threads (``ZEROLABEL_HTTP_THREADS``) are for
/predict calls waiting on their jobs, with /health still answered beside them.
"""

from __future__ import annotations

import ipaddress
import logging

import click

logger = logging.getLogger(__name__)

CHANNEL_TIMEOUT_S = 60
"""A connection silent this long is closed."""
CONNECTION_LIMIT = 500
"""Open connections accepted at once."""


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=9090, show_default=True, help="Port to bind.")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read settings from this file; variables already in the environment win.",
)
def serve(host: str, port: int, env_file: str | None) -> None:
    """Run the Label Studio ML backend (HTTP, for Label Studio's Connect Model)."""
    import waitress
    from zerolabel.envfile import load_env_file
    from zerolabel.errors import DiscoveryError
    from zerolabel.queue.service import PredictionService
    from zerolabel.settings import BackendSettings

    from zerolabel_backend.app import create_app

    try:
        if env_file is not None:
            load_env_file(env_file)
        settings = BackendSettings.from_env()
        app = create_app(PredictionService(settings), settings)
    except DiscoveryError as exc:
        raise click.ClickException(str(exc)) from None
    _setup_logging(settings.log_level)
    warn_if_open(host, settings.basic_auth is not None)
    waitress.serve(
        app,
        host=host,
        port=port,
        threads=settings.http_threads,
        connection_limit=CONNECTION_LIMIT,
        channel_timeout=CHANNEL_TIMEOUT_S,
        max_request_body_size=settings.max_request_bytes,
        ident="zerolabel",
    )


def _setup_logging(level: str) -> None:
    from zerolabel.transport import redact_logs

    if not logging.getLogger().handlers:  # the zerolabel group may have set it up already
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    redact_logs()


def warn_if_open(host: str, authenticated: bool) -> bool:
    """Warn when the backend listens beyond this machine without basic auth; whether it did.

    Without ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` anyone who reaches the port can have
    images run, their regions written to tasks of the configured Label Studio, and the queue
    filled.
    """
    if authenticated or _loopback(host):
        return False
    logger.warning(
        "serving without basic auth on %s: anyone who reaches this port can queue work and have "
        "predictions written to Label Studio; set BASIC_AUTH_USER and BASIC_AUTH_PASS (and "
        "enter them in Label Studio's Connect Model form), or bind 127.0.0.1",
        host,
    )
    return True


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address
