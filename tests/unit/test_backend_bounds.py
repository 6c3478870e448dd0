"""What a caller of the backend can make it keep or do is bounded and answered in kind: a bad
Authorization header is a 401, a boolean task id is a per-task refusal, Extra params have a
size, the projects remembered have a size in bytes, an over-long body is refused by the server,
and serving without basic auth beyond this machine is warned about."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import requests
import waitress
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.options import MAX_EXTRA_PARAMS_BYTES, MAX_LABEL_CHARS, ProjectOptions
from zerolabel.queue.service import PredictionService, ProjectContext
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import ProjectRegistry, create_app
from zerolabel_backend.cli import warn_if_open

CONFIG = (Path(__file__).resolve().parents[2] / "examples" / "label_config.xml").read_text()


@pytest.fixture
def client():
    env = {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw", "ZEROLABEL_WAIT_TIMEOUT_S": "0.05"}
    service = PredictionService(BackendSettings.from_env(env), redis=fakeredis.FakeRedis())
    return create_app(service).test_client()


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Basic é", id="non-ascii"),
        pytest.param("Basic //4=", id="not-utf8-inside"),  # base64 of the bytes ff fe
        pytest.param("Basic !!!!", id="not-base64"),
        pytest.param("Basic ", id="empty"),
        pytest.param("Bearer x", id="other-scheme"),
    ],
)
def test_a_malformed_authorization_header_is_a_401_never_a_500(client, header: str):
    reply = client.post("/setup", json={}, headers={"Authorization": header})
    assert reply.status_code == 401 and reply.is_json


def test_a_boolean_task_id_is_refused_for_that_task_alone(client):
    tasks = [{"id": True, "data": {"image": "/data/upload/1/a.jpg"}}]
    body = {"tasks": tasks, "project": "3.1", "label_config": CONFIG}
    reply = client.post("/predict", json=body, auth=("ls", "pw")).get_json()
    assert reply["results"] == [[]]
    assert reply["skipped"][0]["reason"] == "task id must be an integer, got a boolean"


def test_extra_params_have_a_size_and_so_does_the_label():
    big = {"label": "object", "params": {f"k{i}": i for i in range(3000)}}
    assert len(json.dumps(big)) > MAX_EXTRA_PARAMS_BYTES
    for raw in (big, json.dumps(big)):
        with pytest.raises(ConfigError, match=f"at most {MAX_EXTRA_PARAMS_BYTES} are accepted"):
            ProjectOptions.parse(raw)
    with pytest.raises(ConfigError, match=f"at most {MAX_LABEL_CHARS} characters"):
        ProjectOptions.parse({"label": "x" * (MAX_LABEL_CHARS + 1)})
    assert ProjectOptions.parse({"label": "x" * MAX_LABEL_CHARS}).label == "x" * MAX_LABEL_CHARS


def test_a_setup_with_oversized_extra_params_is_refused(client):
    body = {"project": "3.1", "schema": CONFIG, "extra_params": {"label": "x" * 100_000}}
    reply = client.post("/setup", json=body, auth=("ls", "pw"))
    assert reply.status_code == 400 and "at most" in reply.get_json()["error"]


def test_the_projects_remembered_are_bounded_in_bytes():
    registry = ProjectRegistry(capacity=1000, max_bytes=10_000)
    label = "x" * MAX_LABEL_CHARS
    for project in range(1, 200):
        options = ProjectOptions.parse({"label": label})
        registry.remember(f"{project}.1", ProjectContext(options=options, project_id=project))
    assert registry._bytes <= 10_000
    kept = [p for p in range(1, 200) if registry.get(str(p)).project_id == p]
    assert kept and kept == list(range(200 - len(kept), 200))  # the latest ones
    assert len(kept) < 199


def test_a_project_that_is_no_label_studio_id_is_not_remembered():
    registry = ProjectRegistry()
    for name in ("x" * 1000, "-3.1", "0.1", "", "1" * 30):
        registry.remember(name, ProjectContext(hostname="http://ls"))
        assert registry.get(name).hostname is None
    assert registry._bytes == 0


@pytest.fixture
def served() -> Iterator[str]:
    """The backend behind waitress with a 2 KiB body limit, as ``zerolabel serve`` runs it."""
    settings = BackendSettings.from_env({"ZEROLABEL_MAX_REQUEST_BYTES": "2048"})
    app = create_app(PredictionService(settings, redis=fakeredis.FakeRedis()))
    server = waitress.create_server(
        app, host="127.0.0.1", port=0, threads=2, max_request_body_size=2048
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    server.task_dispatcher.shutdown()


def test_a_body_over_the_limit_is_refused_before_it_is_read(served: str):
    body = json.dumps({"tasks": [], "label_config": "x" * 10_000})
    reply = requests.post(
        f"{served}/predict", data=body, timeout=10, headers={"Connection": "close"}
    )
    assert reply.status_code == 413


@pytest.mark.parametrize(
    ("host", "authenticated", "warned"),
    [
        pytest.param("0.0.0.0", False, True, id="every-address"),
        pytest.param("192.168.1.5", False, True, id="lan"),
        pytest.param("backend.example", False, True, id="a-name"),
        pytest.param("127.0.0.1", False, False, id="loopback"),
        pytest.param("::1", False, False, id="loopback-v6"),
        pytest.param("localhost", False, False, id="localhost"),
        pytest.param("0.0.0.0", True, False, id="with-basic-auth"),
    ],
)
def test_serving_without_basic_auth_beyond_this_machine_is_warned_about(
    host: str, authenticated: bool, warned: bool, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING, "zerolabel_backend"):
        assert warn_if_open(host, authenticated) is warned
    assert ("serving without basic auth" in caplog.text) is warned
