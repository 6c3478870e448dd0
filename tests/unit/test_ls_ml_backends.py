"""LabelStudioClient.ml_backends: the project's ML backend connections with their extra params."""

from __future__ import annotations

from typing import Any

from zerolabel.labelstudio.client import LabelStudioClient

LEGACY = "0123456789abcdef0123456789abcdef01234567"


def test_ml_backends_lists_the_projects_connections(monkeypatch):
    calls: list[tuple[str, str, dict[str, Any]]] = []
    reply = [{"id": 4, "url": "http://backend:9090", "extra_params": {"method": "maskcut"}}]

    def request(method: str, path: str, **kwargs: Any) -> Any:
        calls.append((method, path, kwargs))
        return reply

    with LabelStudioClient("http://ls.test:8080", LEGACY) as client:
        monkeypatch.setattr(client, "request", request)
        assert client.ml_backends(3) == reply
        monkeypatch.setattr(client, "request", lambda *args, **kwargs: None)
        assert client.ml_backends(3) == []  # an empty reply
    assert calls == [("GET", "/api/ml", {"params": {"project": 3}})]
