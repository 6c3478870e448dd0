"""What a request leaves in Redis and for how long: every key it writes expires within
``ZEROLABEL_RESULT_TTL_S``; only RQ's shared structures (queues, registries) stay."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from zerolabel.queue.service import PredictionService
from zerolabel.settings import MIN_RETENTION_S
from zerolabel_backend.app import create_app

from tests.unit.test_backend_metrics import _predict, _run_jobs, _settings


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    from tests.unit.test_backend_metrics import photos as make

    return make.__wrapped__(tmp_path)  # type: ignore[attr-defined]


def _shared(key: str) -> bool:
    """RQ's own queue, registry and worker structures, shared by every request."""
    return key.startswith(
        (
            "rq:queue:",
            "rq:queues",
            "rq:wip:",
            "rq:finished:",
            "rq:failed:",
            "rq:deferred:",
            "rq:scheduled:",
            "rq:canceled:",
            "rq:workers",
            "rq:worker:",
            "rq:intermediate",
            "rq:started:",
            "rq:clean_registries:",
            "rq:maintenance",
        )
    )


@pytest.mark.parametrize("ttl", [MIN_RETENTION_S, 3 * 86400])
def test_every_key_a_request_writes_expires_within_the_retention(photos, monkeypatch, ttl):
    redis = fakeredis.FakeRedis()
    settings = _settings(photos[0].parent, ZEROLABEL_RESULT_TTL_S=str(ttl))
    client = create_app(PredictionService(settings, redis=redis), settings).test_client()
    for path in photos:
        _predict(client, path)
    _run_jobs(redis, settings, monkeypatch)
    for path in photos:
        assert _predict(client, path)[0]["result"]
    _predict(client, photos[0].parent / "still-waiting.png")  # a task whose job has not run
    kept = {key.decode(): redis.ttl(key) for key in redis.keys("*")}
    per_request = {key: left for key, left in kept.items() if not _shared(key)}
    assert per_request, "the requests wrote keys of their own"
    assert {key: left for key, left in per_request.items() if not 0 < left <= ttl} == {}


def test_a_retention_shorter_than_a_day_is_refused():
    from zerolabel.errors import ConfigError
    from zerolabel.settings import QueueSettings

    with pytest.raises(ConfigError, match="ZEROLABEL_RESULT_TTL_S='3600' must be >= 86400"):
        QueueSettings.from_env({"ZEROLABEL_RESULT_TTL_S": "3600"})
