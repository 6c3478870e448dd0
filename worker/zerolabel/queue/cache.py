"""The result cache: finished results by model_version, image origin and image content.

What it adds to RQ: RQ keeps a job's result under the job; the same image under another URL,
or asked for by another job, is found here by its content instead of being computed again.

Keys:
  zerolabel:result:<version>:<origin digest>:<sha256>

``origin`` names where the image came from (``scheme://host:port``, or ``local``): a result
computed from one origin is never returned for another, so a project pointed at a hostile server
cannot plant results for the same relative URL on the real Label Studio. Keys hold only the
origin's digest.
"""

from __future__ import annotations

import hashlib
import json

from redis import Redis

from zerolabel.contract import DiscoveryResult


def _result_key(model_version: str, origin: str, sha256: str) -> str:
    digest = hashlib.sha256(origin.encode()).hexdigest()[:16]
    return f"zerolabel:result:{model_version}:{digest}:{sha256}"


class ResultCache:
    """Finished results by model_version, image origin and image content hash."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    def get(self, model_version: str, origin: str, sha256: str) -> DiscoveryResult | None:
        raw = self.redis.get(_result_key(model_version, origin, sha256))
        return DiscoveryResult.from_dict(json.loads(raw)) if raw else None

    def put(self, result: DiscoveryResult, origin: str, sha256: str) -> None:
        key = _result_key(result.model_version, origin, sha256)
        self.redis.set(key, json.dumps(result.to_dict()), ex=self.ttl_s)
