"""Wire types: JSON round trips, a model_version that is stable and follows the spec."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from zerolabel.contract import Box, DiscoveryRequest, DiscoveryResult, DiscoverySpec, Region, Rle

SPEC = DiscoverySpec(method="maskcut", params={"tau": 0.15, "max_objects": 3}, max_side=480)


def test_result_survives_json():
    region = Region(Box(1, 2, 30, 40), 0.75, "maskcut", Rle((50, 40), [5, 10, 1985]), "object")
    result = DiscoveryResult("/data/upload/1/a.jpg", (50, 40), [region], "v1", task_id=3)
    assert DiscoveryResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert result.score == 0.75


def test_task_score_is_the_mean_region_score_and_zero_without_regions():
    regions = [Region(Box(0, 0, 5, 5), s, "lost") for s in (0.6, 0.2, 0.9)]
    assert DiscoveryResult("a.jpg", (10, 10), regions, "v").score == pytest.approx(1.7 / 3)
    assert DiscoveryResult("a.jpg", (10, 10), [], "v").score == 0.0


def test_request_survives_json_and_carries_no_token():
    request = DiscoveryRequest(SPEC, "/data/upload/1/a.jpg", 3, "http://ls:8080")
    assert DiscoveryRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    assert set(request.to_dict()) == {"schema", "spec", "image", "task_id", "ls_url"}
    assert re.fullmatch(r"[A-Za-z0-9_-]+", request.job_id)


def test_a_token_sent_by_an_older_backend_is_not_read():
    data = DiscoveryRequest(SPEC, "/data/upload/1/a.jpg", 3, "http://ls:8080").to_dict()
    request = DiscoveryRequest.from_dict(data | {"ls_token": "s3cret"})
    assert "s3cret" not in json.dumps(request.to_dict()) and "s3cret" not in repr(request)


def test_job_id_follows_the_label_studio_a_relative_url_belongs_to():
    def job(image: str, ls_url: str | None) -> str:
        return DiscoveryRequest(SPEC, image, 1, ls_url).job_id

    relative = "/data/local-files/?d=set1/photo.jpg"
    assert job(relative, "http://ls:8080") != job(relative, "http://evil:8080")
    assert job(relative, "http://ls:8080") == job(relative, "http://ls:8080/")
    assert job(relative, "http://ls:8080") == job("http://ls:8080" + relative, None)
    absolute = "http://images.test/a.jpg"  # already names its origin
    assert job(absolute, "http://ls:8080") == job(absolute, None)


def test_model_version_is_the_same_in_another_process():
    code = (
        "from zerolabel.contract import DiscoverySpec; print(DiscoverySpec(method='maskcut', "
        "params={'max_objects': 3, 'tau': 0.15}, max_side=480).model_version())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert other.stdout.strip() == SPEC.model_version()


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"params": {"tau": 0.2, "max_objects": 3}}, id="threshold"),
        pytest.param({"backbone": "dino_vitb8"}, id="backbone"),
        pytest.param({"weights": "dino_vitbase8_pretrain.pth"}, id="weights"),
        pytest.param({"max_side": 640}, id="max-side"),
        pytest.param({"masks": False}, id="masks"),
    ],
)
def test_model_version_follows_every_setting(changed):
    fields = SPEC.to_dict() | changed
    assert DiscoverySpec(**fields).model_version() != SPEC.model_version()
    same_job_other_spec = DiscoveryRequest(DiscoverySpec(**fields), "a.jpg").job_id
    assert same_job_other_spec != DiscoveryRequest(SPEC, "a.jpg").job_id


def test_schema_mismatch_is_explained():
    data = DiscoveryRequest(SPEC, "a.jpg").to_dict() | {"schema": 99}
    with pytest.raises(ValueError, match="different zerolabel versions"):
        DiscoveryRequest.from_dict(data)
    with pytest.raises(ValueError, match="unknown method"):
        DiscoverySpec(method="yolo")
