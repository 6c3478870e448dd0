"""WSGI entry point: ``gunicorn --workers 1 --threads 8 zerolabel_backend.wsgi:app``.

Settings are read and logging is configured here, once per process.
"""

from __future__ import annotations

import logging
import os

from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings

from zerolabel_backend.app import create_app

logging.basicConfig(
    level=os.environ.get("ZEROLABEL_LOG_LEVEL", "INFO").upper(),
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
app = create_app(PredictionService(BackendSettings.from_env()))
