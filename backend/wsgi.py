"""WSGI entry point: ``gunicorn --workers 1 --threads 8 backend.wsgi:app``.

Settings are read and logging is configured here, once per process.
"""

from __future__ import annotations

import logging
import os

from backend.app import create_app
from backend.service import PredictionService
from backend.settings import get_settings

logging.basicConfig(
    level=os.environ.get("ZEROLABEL_LOG_LEVEL", "INFO").upper(),
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
app = create_app(PredictionService(get_settings()))
