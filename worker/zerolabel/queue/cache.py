"""The result cache: finished results by model_version and image content.

Keys:
  zerolabel:result:<version>:<sha256>  a finished result by model_version and image content
"""

from __future__ import annotations

import json

from redis import Redis

from zerolabel.contract import DiscoveryResult


def _result_key(model_version: str, sha256: str) -> str:
    return f"zerolabel:result:{model_version}:{sha256}"


class ResultCache:
    """Finished results by model_version and image content hash."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    def get(self, model_version: str, sha256: str) -> DiscoveryResult | None:
        raw = self.redis.get(_result_key(model_version, sha256))
        return DiscoveryResult.from_dict(json.loads(raw)) if raw else None

    def put(self, result: DiscoveryResult, sha256: str) -> None:
        key = _result_key(result.model_version, sha256)
        self.redis.set(key, json.dumps(result.to_dict()), ex=self.ttl_s)
