"""``zerolabel serve``: the development server (gunicorn serves :mod:`.wsgi` in production).

Registered as a ``zerolabel.commands`` entry point, so the library's CLI offers it without
importing this package.
"""

from __future__ import annotations

import click
from werkzeug.serving import run_simple
from zerolabel.errors import DiscoveryError
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings

from zerolabel_backend.app import create_app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=9090, show_default=True, help="Port to bind.")
def serve(host: str, port: int) -> None:
    """Run the Label Studio ML backend (development server; use gunicorn in production)."""
    try:
        app = create_app(PredictionService(BackendSettings.from_env()))
    except DiscoveryError as exc:
        raise click.ClickException(str(exc)) from None
    run_simple(host, port, app, threaded=True)
