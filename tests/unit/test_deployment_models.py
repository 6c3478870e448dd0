"""Compose gives backend and workers one models folder: the same files, read-only, one path."""

from __future__ import annotations

import json

from tests.unit.test_deployment import _compose


def test_backend_and_workers_see_the_same_models_folder_read_only():
    services = json.loads(_compose("--profile", "cpu", "config", "--format", "json").stdout)
    services = services["services"]
    seen = set()
    for name in ("backend", "worker", "worker-cpu"):
        folder = services[name]["environment"]["ZEROLABEL_MODELS_DIR"]
        (mount,) = [v for v in services[name]["volumes"] if v["target"] == folder]
        assert mount["read_only"], name
        seen.add((folder, mount["source"]))
    assert len(seen) == 1  # one folder of the host, at one path in every container
