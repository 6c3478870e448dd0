"""What the backend does with requests Label Studio would never send: a JSON 4xx with a reason,
never an HTML page and never a job; and with basic auth on, nothing without the credentials."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from rq import Queue
from rq.serializers import JSONSerializer
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import ProjectRegistry, create_app

CONFIG = (Path(__file__).resolve().parents[2] / "examples" / "label_config.xml").read_text()
TASK = {"id": 1, "data": {"image": "/data/upload/1/a.jpg"}}
ENV = {"ZEROLABEL_WAIT_TIMEOUT_S": "0.1", "LABEL_STUDIO_URL": "http://ls:8080"}


def _client(redis: fakeredis.FakeRedis, **env: str) -> Any:
    settings = BackendSettings.from_env({**ENV, **env})
    return create_app(PredictionService(settings, redis=redis), settings).test_client()


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def client(redis: fakeredis.FakeRedis) -> Any:
    return _client(redis)


def _setup(**fields: Any) -> dict[str, Any]:
    return {
        "project": "3.1",
        "schema": CONFIG,
        "hostname": "http://ls:8080",
        "access_token": "tok",
        "extra_params": None,
        **fields,
    }


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


_XXE = (
    '<!DOCTYPE View [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<View><Image name="image" value="$image"/><Header value="&x;"/></View>'
)
_LAUGHS = (
    '<!DOCTYPE View [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    '<View><Image name="image" value="$image"/><Header value="&b;"/></View>'
)

SETUP_BODIES = [
    pytest.param("not json", "not valid JSON", id="setup-not-json"),
    pytest.param("", "must be a JSON object", id="setup-empty-body"),
    pytest.param("[]", "must be a JSON object", id="setup-array"),
    pytest.param('"text"', "must be a JSON object", id="setup-string"),
    pytest.param("42", "must be a JSON object", id="setup-number"),
    pytest.param("null", "must be a JSON object", id="setup-null"),
    pytest.param(_deep(100_000), "not valid JSON", id="setup-deeply-nested"),
    pytest.param(_setup(schema=5), "'schema' must be a string", id="schema-number"),
    pytest.param(_setup(schema=["<View/>"]), "'schema' must be a string", id="schema-list"),
    pytest.param(_setup(schema="<View"), "not valid XML", id="schema-invalid-xml"),
    pytest.param(_setup(schema=_XXE), "<!DOCTYPE> or <!ENTITY>", id="schema-xxe"),
    pytest.param(_setup(schema=_LAUGHS), "<!DOCTYPE> or <!ENTITY>", id="schema-laughs"),
    pytest.param(
        _setup(schema="<View>" * 200 + "</View>" * 200), "deep", id="schema-deeply-nested"
    ),
    pytest.param(
        _setup(schema=f"<View><Header value='{'x' * 2_000_000}'/></View>"),
        "at most",
        id="schema-2mb",
    ),
    pytest.param(
        _setup(schema="<View><Text name='t' value='$t'/></View>"), "<Image>", id="no-image"
    ),
    pytest.param(_setup(hostname=17), "'hostname' must be a string", id="hostname-number"),
    pytest.param(_setup(hostname="not a url"), "hostname", id="hostname-not-url"),
    pytest.param(_setup(hostname="ftp://ls:8080"), "hostname", id="hostname-ftp"),
    pytest.param(_setup(hostname="http://evil:1"), "hostname", id="hostname-foreign"),
    pytest.param(_setup(access_token=12345), "'access_token' must be a string", id="token-int"),
    pytest.param(_setup(access_token=["t"]), "'access_token' must be a string", id="token-list"),
    pytest.param(_setup(project=["3"]), "'project' must be", id="project-list"),
    pytest.param(_setup(project={"id": 3}), "'project' must be", id="project-object"),
    pytest.param(_setup(extra_params=[1]), "'extra_params' must be", id="extra-list"),
    pytest.param(_setup(extra_params=7), "'extra_params' must be", id="extra-number"),
    pytest.param(_setup(extra_params="{oops"), "not valid JSON", id="extra-bad-json"),
    pytest.param(_setup(extra_params='"text"'), "JSON object", id="extra-json-string"),
    pytest.param(_setup(extra_params={"methd": "lost"}), "unknown extra params", id="extra-key"),
    pytest.param(_setup(extra_params={"method": "yolo"}), "unknown method", id="method-unknown"),
    pytest.param(_setup(extra_params={"method": 3}), "method", id="method-number"),
    pytest.param(_setup(extra_params={"max_side": "big"}), "max_side", id="max-side-text"),
    pytest.param(_setup(extra_params={"max_side": -5}), "max_side", id="max-side-negative"),
    pytest.param(_setup(extra_params={"max_side": 1_000_000}), "max_side", id="max-side-huge"),
    pytest.param(_setup(extra_params={"square": 100_000}), "square", id="square-huge"),
    pytest.param(_setup(extra_params={"square": 0}), "square", id="square-zero"),
    pytest.param(_setup(extra_params={"masks": "yes"}), "masks", id="masks-text"),
    pytest.param(_setup(extra_params={"tau": "x"}), "tau", id="tau-text"),
    pytest.param(_setup(extra_params={"k_patches": 0}), "k_patches", id="k-patches-zero"),
    pytest.param(_setup(extra_params={"params": []}), "params", id="params-list"),
    pytest.param(_setup(extra_params={"params": {"tua": 1}}), "tua", id="params-unknown"),
    pytest.param(_setup(extra_params={"backbone": "evil_net"}), "backbone", id="backbone-unknown"),
    pytest.param(_setup(extra_params={"label": 5}), "label", id="label-number"),
    pytest.param(_setup(extra_params={"preset": "authors"}), "preset", id="preset-unknown"),
    pytest.param(_setup(extra_params={"preset": ["paper"]}), "preset", id="preset-list"),
]

PREDICT_BODIES = [
    pytest.param("not json", "not valid JSON", id="predict-not-json"),
    pytest.param("[]", "must be a JSON object", id="predict-array"),
    pytest.param(_deep(100_000), "not valid JSON", id="predict-deeply-nested"),
    pytest.param({"tasks": "1,2"}, "'tasks' must be a list", id="tasks-string"),
    pytest.param({"tasks": {"id": 1}}, "'tasks' must be a list", id="tasks-object"),
    pytest.param({"tasks": None}, "'tasks' must be a list", id="tasks-missing"),
    pytest.param({"tasks": [TASK] * 1001}, "at most 1000", id="tasks-too-many"),
    pytest.param({"tasks": [TASK], "params": [1]}, "'params' must be", id="params-list"),
    pytest.param({"tasks": [TASK], "label_config": 5}, "'label_config' must be", id="config-int"),
    pytest.param({"tasks": [TASK], "label_config": _XXE}, "<!DOCTYPE>", id="config-xxe"),
    pytest.param({"tasks": [TASK], "label_config": "<View/>"}, "<Image>", id="config-no-image"),
]


def _post(client: Any, path: str, body: Any) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json")


def _jobs(redis: fakeredis.FakeRedis) -> list[Any]:
    return Queue("zerolabel", connection=redis, serializer=JSONSerializer).jobs


@pytest.mark.parametrize(("body", "reason"), SETUP_BODIES)
def test_a_malformed_setup_gets_a_json_400_with_the_reason(client, redis, body, reason):
    reply = _post(client, "/setup", body)
    assert reply.status_code == 400 and reply.is_json, reply.data[:200]
    assert reason in reply.get_json()["error"]
    assert "model_version" not in reply.get_json()
    _post(client, "/predict", {"tasks": [TASK], "project": "3", "label_config": CONFIG})
    assert all(job.args[0]["spec"]["params"] == {} for job in _jobs(redis))


@pytest.mark.parametrize(("body", "reason"), PREDICT_BODIES)
def test_a_malformed_predict_gets_a_json_400_and_queues_nothing(client, redis, body, reason):
    if isinstance(body, dict):
        body = {"project": "3", "label_config": CONFIG, **body}
    reply = _post(client, "/predict", body)
    assert reply.status_code == 400 and reply.is_json, reply.data[:200]
    assert reason in reply.get_json()["error"]
    assert _jobs(redis) == []


def test_there_are_at_least_fifty_kinds_of_malformed_request():
    assert len(SETUP_BODIES) + len(PREDICT_BODIES) >= 50


@pytest.mark.parametrize(
    ("task", "problem"),
    [
        pytest.param("just text", "must be a JSON object", id="task-string"),
        pytest.param({"id": 2, "data": "img.jpg"}, "'data' must be a JSON object", id="data-str"),
        pytest.param({"id": 2}, "'data' must be a JSON object", id="data-missing"),
        pytest.param({"id": "two", "data": {}}, "task id must be an integer", id="id-text"),
    ],
)
def test_a_bad_task_fails_alone_and_the_batch_goes_on(client, redis, task, problem):
    other = {"id": 3, "data": {"image": "/data/upload/1/b.jpg"}}
    body = {"project": "3", "label_config": CONFIG, "tasks": [TASK, task, other]}
    reply = _post(client, "/predict", body)
    assert reply.status_code == 200
    results = reply.get_json()["results"]
    assert len(results) == 3 and results[1] == []
    (skipped,) = [s for s in reply.get_json()["skipped"] if s["index"] == 1]
    assert problem in skipped["reason"] and skipped["pending"] is False
    assert [job.args[0]["task_id"] for job in _jobs(redis)] == [1, 3]


def test_a_body_over_the_limit_gets_a_json_413(redis):
    client = _client(redis, ZEROLABEL_MAX_REQUEST_BYTES="4096")
    reply = _post(client, "/predict", {"tasks": [TASK], "label_config": "x" * 8000})
    assert reply.status_code == 413 and reply.is_json
    assert _jobs(redis) == []


def test_unknown_routes_and_methods_answer_json(client):
    assert client.get("/nowhere").is_json and client.get("/nowhere").status_code == 404
    assert client.put("/predict").status_code == 405 and client.put("/predict").is_json


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param(_basic("ls", "wrong"), id="wrong-password"),
        pytest.param(_basic("other", "s3cret"), id="wrong-user"),
        pytest.param({"Authorization": "Basic !!!"}, id="not-base64"),
        pytest.param({"Authorization": "Bearer s3cret"}, id="other-scheme"),
    ],
)
def test_with_basic_auth_on_every_route_but_health_needs_the_credentials(redis, headers):
    client = _client(redis, BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="s3cret")
    assert client.get("/health", headers=headers).status_code == 200
    for method, path in [
        ("post", "/setup"),
        ("post", "/predict"),
        ("post", "/webhook"),
        ("get", "/versions"),
        ("get", "/metrics"),
    ]:
        reply = getattr(client, method)(path, json=_setup(), headers=headers)
        assert reply.status_code == 401 and reply.is_json, path
        assert reply.headers["WWW-Authenticate"].startswith("Basic")
    assert _jobs(redis) == []


def test_with_the_right_credentials_label_studio_is_served(redis):
    client = _client(redis, BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="s3cret")
    auth = _basic("ls", "s3cret")
    assert client.post("/setup", json=_setup(), headers=auth).status_code == 200
    body = {"project": "3.1", "label_config": CONFIG, "tasks": [TASK]}
    assert client.post("/predict", json=body, headers=auth).status_code == 200
    assert len(_jobs(redis)) == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"BASIC_AUTH_USER": "ls"}, "set both", id="user-only"),
        pytest.param({"BASIC_AUTH_PASS": "x"}, "set both", id="password-only"),
        pytest.param({"BASIC_AUTH_USER": "a:b", "BASIC_AUTH_PASS": "x"}, "':'", id="colon"),
    ],
)
def test_half_configured_basic_auth_fails_at_start(env, message):
    from zerolabel.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        BackendSettings.from_env(env)


def test_project_backbones_are_the_named_backbones():
    from zerolabel.labelstudio.options import PROJECT_BACKBONES
    from zerolabel.vit.backbone import BACKBONES

    assert set(PROJECT_BACKBONES) == set(BACKBONES)


def test_the_project_registry_is_bounded():
    registry = ProjectRegistry(capacity=3)
    from zerolabel.queue.service import ProjectContext

    for project in range(10):
        registry.remember(f"{project}.1", ProjectContext(hostname=f"http://h{project}"))
    assert registry.get("9").hostname == "http://h9"
    assert registry.get("0").hostname is None  # forgotten: the defaults answer


def test_with_redis_down_answers_and_logs_name_redis_without_its_password(caplog):
    import socket

    with socket.socket() as sock:  # a port nothing listens on: refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = BackendSettings.from_env({**ENV, "REDIS_URL": f"redis://:s3cret@127.0.0.1:{port}/0"})
    client = create_app(PredictionService(settings), settings).test_client()
    reply = _post(client, "/predict", {"tasks": [TASK], "label_config": CONFIG})
    (skipped,) = reply.get_json()["skipped"]
    assert skipped["reason"].startswith(f"Redis unreachable at redis://127.0.0.1:{port}/0: ")
    assert "s3cret" not in reply.get_data(as_text=True) and "s3cret" not in caplog.text
    health = client.get("/health")
    assert "s3cret" not in health.get_data(as_text=True)
