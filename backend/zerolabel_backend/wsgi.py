"""WSGI entry point for any WSGI server: ``app``. ``zerolabel serve`` is the supported one.

Settings are read and logging is configured here, once per process.
"""

from __future__ import annotations

import logging

from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings

from zerolabel_backend.app import create_app

_settings = BackendSettings.from_env()
logging.basicConfig(
    level=_settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
app = create_app(PredictionService(_settings), _settings)
