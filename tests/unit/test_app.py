"""The backend's HTTP contract with Label Studio, on an in-memory Redis (no worker runs)."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest
from rq import Queue
from rq.serializers import JSONSerializer
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import create_app

CONFIG = (Path(__file__).resolve().parents[2] / "examples" / "label_config.xml").read_text()
BOXES_ONLY = """<View><Image name="img" value="$photo"/>
<RectangleLabels name="box" toName="img">
<Label value="car"/><Label value="Object"/>
</RectangleLabels></View>"""


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def client(redis):
    settings = BackendSettings.from_env(
        {"ZEROLABEL_WAIT_TIMEOUT_S": "0.2", "LABEL_STUDIO_URL": "http://ls:8080"}
    )
    return create_app(PredictionService(settings, redis=redis)).test_client()


def _setup(client, schema=CONFIG, extra=None, project="3.1700000000"):
    return client.post(
        "/setup",
        json={
            "project": project,
            "schema": schema,
            "hostname": "http://ls:8080",
            "access_token": "tok",
            "extra_params": extra,
        },
    )


def test_setup_returns_a_stable_version_that_follows_the_options(client):
    first = _setup(client).get_json()["model_version"]
    assert _setup(client).get_json()["model_version"] == first
    other = _setup(client, extra='{"method": "maskcut", "tau": 0.3}').get_json()["model_version"]
    assert other != first and "maskcut" in other
    maskcut = '{"method": "maskcut"}'
    with_masks = _setup(client, extra=maskcut).get_json()["model_version"]
    boxes_only = _setup(client, schema=BOXES_ONLY, extra=maskcut).get_json()["model_version"]
    assert boxes_only != with_masks  # no BrushLabels: masks are not computed, another version
    # LOST's patch-grid mask is sent as its box either way: the same pre-labels, one version
    assert _setup(client, schema=BOXES_ONLY).get_json()["model_version"] == first


@pytest.mark.parametrize(
    ("schema", "extra", "message"),
    [
        pytest.param(
            "<View><Text name='t' value='$t'/></View>", None, "no <Image> tag", id="no-image"
        ),
        pytest.param(CONFIG, '{"methd": "lost"}', "unknown extra params", id="typo-option"),
        pytest.param(CONFIG, '{"method": "yolo"}', "unknown method", id="bad-method"),
        pytest.param(CONFIG, "not json", "not valid JSON", id="bad-json"),
    ],
)
def test_setup_refuses_what_it_cannot_serve_with_the_reason(client, schema, extra, message):
    reply = _setup(client, schema=schema, extra=extra)
    assert reply.status_code == 400 and message in reply.get_json()["error"]


@pytest.mark.parametrize(
    ("extra", "allowed"),
    [
        pytest.param({"params": {"tua": 0.2}}, ["k_patches (int in [1, 4096]"], id="nested-typo"),
        pytest.param(
            {"method": "tokencut", "params": {"tua": 0.2}},
            ["tau (float in [-1, 1], default 0.2)", "eps (float in (0, 1]"],
            id="tokencut-typo",
        ),
        pytest.param({"method": "lost", "tau": 0.2}, ["k_patches"], id="other-methods-param"),
        pytest.param({"method": "maskcut", "max_objects": "3"}, ["max_objects (int"], id="type"),
    ],
)
def test_setup_refuses_parameters_the_method_does_not_take_and_names_the_allowed_ones(
    client, redis, extra, allowed
):
    reply = _setup(client, extra=extra)
    assert reply.status_code == 400 and reply.is_json
    error = reply.get_json()["error"]
    assert "model_version" not in reply.get_json()
    assert all(name in error for name in allowed), error
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/a.jpg"}}]
    client.post("/predict", json={"tasks": tasks, "project": "3", "label_config": CONFIG})
    for job in Queue("zerolabel", connection=redis, serializer=JSONSerializer).jobs:
        assert job.args[0]["spec"]["params"] == {}  # the refused options never reach a job


def test_predict_before_setup_answers_one_entry_per_task(client):
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/a.jpg"}}, {"id": 2, "data": {}}]
    reply = client.post("/predict", json={"tasks": tasks, "project": "9", "label_config": CONFIG})
    assert reply.status_code == 200
    results = reply.get_json()["results"]
    assert results == [[], []]  # no prediction now: LS stores nothing and logs no error
    reasons = [
        (s["index"], s["task"], s["pending"], s["reason"]) for s in reply.get_json()["skipped"]
    ]
    assert [r[:3] for r in reasons] == [(0, 1, False), (1, 2, False)]  # no /setup: not written
    assert "late" in reasons[0][3] and "no 'image' image URL" in reasons[1][3]


def test_versions_answers_get_and_post_and_events_do_not_change_the_version(client):
    version = _setup(client).get_json()["model_version"]
    assert client.get("/versions").status_code == 200
    assert client.post("/versions", json={"project": "3"}).status_code == 200
    event = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 3}})
    assert event.status_code == 200
    assert _setup(client).get_json()["model_version"] == version


def test_health_reports_queue_and_workers(client):
    health = client.get("/health").get_json()
    assert health["status"] == "UP"
    assert health["queue"] | {} == {
        "reachable": True,
        "queue": "zerolabel",
        "queue_depth": 0,
        "workers": 0,
    }


def test_the_token_from_setup_is_never_forwarded(client, redis):
    _setup(client, project="5.1")
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/a.jpg"}}]
    client.post("/predict", json={"tasks": tasks, "project": "5.1", "label_config": CONFIG})
    (job,) = Queue("zerolabel", connection=redis, serializer=JSONSerializer).jobs
    assert job.args[0]["ls_url"] == "http://ls:8080" and "ls_token" not in job.args[0]
    assert "tok" not in json.dumps(job.args[0]) and "tok" not in job.description


def test_the_same_task_asked_twice_is_one_job(client, redis):
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/a.jpg"}}]
    for _ in range(2):
        client.post("/predict", json={"tasks": tasks, "project": "5", "label_config": CONFIG})
    assert len(Queue("zerolabel", connection=redis, serializer=JSONSerializer).jobs) == 1
