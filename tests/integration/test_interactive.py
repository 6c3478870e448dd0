"""Interactive prompts through the backend, a real redis-server and real worker processes.

A click on a task answers one object (a brush and its box, linked as one object) from the
worker's cached features; a background click (sent with the clicks before it, as Label Studio
does) carves it; prompts overtake a pre-labeling run
queued before them; bad contexts get a 400 naming the cause and the worker keeps serving.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from redis import Redis
from rq import Queue
from zerolabel.labelstudio.brush import brush_rle_decode
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import create_app

from tests.servers import image_server, redis_server, start_worker, stop, wait_for_workers

pytestmark = pytest.mark.integration

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image" smart="false"><Label value="object"/></BrushLabels>
  <RectangleLabels name="label" toName="image" smart="false">
    <Label value="object"/>
  </RectangleLabels>
  <KeyPointLabels name="click" toName="image" smart="true">
    <Label value="object" smart="true"/>
  </KeyPointLabels>
  <RectangleLabels name="drag" toName="image" smart="true"><Label value="object"/></RectangleLabels>
</View>"""
PROJECT = "5.1700000000"


def _keypoint(x: float, y: float, positive: bool = True) -> dict[str, Any]:
    return {
        "id": f"k{x}{y}",
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": 480,
        "original_height": 320,
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": 0.6, "keypointlabels": ["object"]},
        "is_positive": positive,
    }


def _photo(path: Path) -> None:
    """A textured background with a flat red object at x 160-320, y 80-240 (of 480 x 320)."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((320, 480, 3)) * 60 + 90).astype(np.uint8)
    pixels[80:240, 160:320] = (200, 30, 30)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_env):
    tmp = tmp_path_factory.mktemp("interactive")
    photos = tmp / "photos"
    photos.mkdir()
    _photo(photos / "object.png")
    for index in range(40):  # a pre-labeling run's images
        Image.fromarray(np.full((224, 224, 3), index * 5, np.uint8)).save(photos / f"{index}.png")
    with redis_server(tmp) as (redis_url, _), image_server(photos) as (images_url, _):
        env = {
            "REDIS_URL": redis_url,
            **tiny_env,
            "ZEROLABEL_ALLOWED_HOSTS": images_url.removeprefix("http://"),
            "ZEROLABEL_WAIT_TIMEOUT_S": "60",
            "ZEROLABEL_METHOD": "maskcut",
        }
        log = tmp / "workers.log"
        workers = [start_worker(env, log), start_worker(env, log)]
        wait_for_workers(redis_url, 2)
        settings = BackendSettings.from_env(env)
        client = create_app(PredictionService(settings), settings).test_client()
        setup = {"project": PROJECT, "schema": CONFIG, "hostname": "", "access_token": ""}
        assert client.post("/setup", json=setup).status_code == 200
        yield client, images_url, redis_url, env, log
        for worker in workers:
            stop(worker)


def _ask(client: Any, images_url: str, regions: list[Any], task: int = 1) -> Any:
    body = {
        "tasks": [{"id": task, "data": {"image": f"{images_url}/object.png"}}],
        "project": PROJECT,
        "label_config": CONFIG,
        "params": {"login": None, "password": None, "context": {"result": regions}},
    }
    return client.post("/predict", json=body)


def _mask(result: list[dict[str, Any]]) -> np.ndarray:
    (brush,) = [item for item in result if item["type"] == "brushlabels"]
    h, w = brush["original_height"], brush["original_width"]
    return brush_rle_decode(brush["value"]["rle"], (h, w))


def test_a_click_answers_one_object_a_background_click_carves_it(stack):
    client, images_url, *_ = stack
    reply = _ask(client, images_url, [_keypoint(50.0, 50.0)], task=1)
    assert reply.status_code == 200, reply.data
    (entry,) = reply.get_json()["results"]
    result = entry["result"]
    kinds = sorted(item["type"] for item in result)
    assert kinds == ["brushlabels", "rectanglelabels"]  # one object: its mask and its box
    box, brush = sorted(result, key=lambda item: item["type"] != "rectanglelabels")
    assert box["id"].removesuffix("-box") == brush["id"].removesuffix("-mask")
    assert box["value"]["rectanglelabels"] == ["object"] == brush["value"]["brushlabels"]
    assert 0.0 <= entry["score"] <= 1.0
    mask = _mask(result)
    assert mask[160, 240]  # the clicked pixel belongs to the object
    rows, cols = np.nonzero(mask)
    far = np.argmax(np.abs(rows - 160) + np.abs(cols - 240))  # a part of it away from the click
    row, col = int(rows[far]), int(cols[far])
    assert abs(row - 160) + abs(col - 240) >= 48  # three patches at least
    background = _keypoint(100 * (col + 0.5) / 480, 100 * (row + 0.5) / 320, positive=False)
    carved = _ask(client, images_url, [_keypoint(50.0, 50.0), background], task=1)
    assert carved.status_code == 200, carved.data
    carved_mask = _mask(carved.get_json()["results"][0]["result"])
    assert carved_mask.sum() < mask.sum() and carved_mask[160, 240] and not carved_mask[row, col]


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        pytest.param({"x": 120.0}, "lies outside the image", id="outside"),
        pytest.param({"keypointlabels": ["cat"]}, "label 'cat' is not one of", id="label"),
        pytest.param({"from_name": "pen"}, "is not a control", id="unknown-control"),
    ],
)
def test_a_bad_click_is_a_400_naming_the_cause_and_the_worker_keeps_serving(stack, change, cause):
    client, images_url, *_ = stack
    region = _keypoint(50.0, 50.0)
    for key, value in change.items():
        (region["value"] if key in region["value"] else region)[key] = value
    refused = _ask(client, images_url, [region], task=2)
    assert refused.status_code == 400 and cause in refused.get_json()["error"]
    served = _ask(client, images_url, [_keypoint(50.0, 50.0)], task=2)
    assert served.status_code == 200 and served.get_json()["results"][0]["result"]


def test_an_ordinary_region_drawn_with_auto_annotation_on_asks_for_nothing(stack):
    client, images_url, *_ = stack
    box = {
        "id": "b1",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 480,
        "original_height": 320,
        "image_rotation": 0,
        "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["object"]},
    }
    reply = _ask(client, images_url, [box], task=5).get_json()
    assert reply["results"] == [[]]
    assert reply["skipped"][0]["reason"] == "no smart-tool region in the interactive request"


def test_a_context_without_an_image_gets_an_empty_answer_with_its_reason(stack):
    client, _, *_ = stack
    body = {
        "tasks": [{"id": 3, "data": {"text": "no image"}}],
        "project": PROJECT,
        "label_config": CONFIG,
        "params": {"context": {"result": [_keypoint(50.0, 50.0)]}},
    }
    reply = client.post("/predict", json=body).get_json()
    assert reply["results"] == [[]]
    assert "no 'image' image URL to click on" in reply["skipped"][0]["reason"]


def test_a_click_overtakes_a_pre_labeling_run_queued_before_it(stack):
    client, images_url, redis_url, env, _ = stack
    plain = {
        "tasks": [{"id": 100 + i, "data": {"image": f"{images_url}/{i}.png"}} for i in range(40)],
        "project": PROJECT,
        "label_config": CONFIG,
        "params": {},
    }
    settings = BackendSettings.from_env({**env, "ZEROLABEL_WAIT_TIMEOUT_S": "0"})
    queuing = create_app(PredictionService(settings), settings).test_client()
    queuing.post("/predict", json=plain)  # 40 jobs queued, the workers start on them
    batch = Queue("zerolabel", connection=Redis.from_url(redis_url))
    queued_before = batch.count
    started = time.perf_counter()
    reply = _ask(client, images_url, [_keypoint(30.0, 30.0)], task=4)
    answered_s = time.perf_counter() - started
    left = batch.count
    assert reply.status_code == 200 and reply.get_json()["results"][0]["result"]
    # answered while most of the run still waited in the queue: the click went first
    assert queued_before > 30 and left > 0, (queued_before, left, answered_s)
