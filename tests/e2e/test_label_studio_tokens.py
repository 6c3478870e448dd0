"""Label Studio 1.23's own tokens: a personal access token (exchanged for access tokens) and a
legacy token each download a task image and call the API; a refused token says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from zerolabel.errors import ImageLoadError, LabelStudioError, TransientFetchError
from zerolabel.io.fetch import Fetcher, FetchPolicy
from zerolabel.io.images import ImageLimits
from zerolabel.labelstudio.client import LabelStudioClient

PHOTO = Path(__file__).resolve().parents[2] / "examples" / "voc2007" / "JPEGImages" / "000001.jpg"
LIMITS = ImageLimits()


def _new_personal_access_token(ls) -> str:
    """A personal access token of the test user (Label Studio keeps one per user)."""
    if ls.api("GET", "/api/token/").json():
        pytest.fail("the test user already holds a personal access token: run this test first")
    return str(ls.api("POST", "/api/token/").json()["token"])


def test_both_kinds_of_token_download_task_images_and_call_the_api(label_studio):
    ls = label_studio
    project = ls.create_project("tokens")
    with PHOTO.open("rb") as handle:
        files = {"file": ("photo.jpg", handle, "image/jpeg")}
        ls.api("POST", f"/api/projects/{project}/import", files=files)
    (task,) = ls.api("GET", f"/api/tasks?project={project}").json()["tasks"]
    image_url = task["data"]["image"]
    pat = _new_personal_access_token(ls)
    try:
        for token in (pat, ls.token):
            with Fetcher(FetchPolicy(ls.url, token, timeout_s=60)) as fetcher:
                assert fetcher.fetch_bytes(image_url, LIMITS) == PHOTO.read_bytes()
                assert fetcher.fetch(image_url, LIMITS).original_hw == (500, 353)
            with LabelStudioClient(ls.url, token, timeout_s=60) as client:
                assert client.project(project)["id"] == project
                assert [t["id"] for t in client.tasks(project)] == [task["id"]]
        refused = pat[:-4] + ("AAAA" if not pat.endswith("AAAA") else "BBBB")
        with Fetcher(FetchPolicy(ls.url, refused, timeout_s=60)) as fetcher:
            with pytest.raises(ImageLoadError, match="refused the personal access token") as info:
                fetcher.fetch(image_url, LIMITS)
        assert not isinstance(info.value, TransientFetchError) and refused not in str(info.value)
        with LabelStudioClient(ls.url, refused) as client, pytest.raises(LabelStudioError) as err:
            client.project(project)
        assert err.value.status == 401 and refused not in str(err.value)
    finally:  # the user holds no personal access token again, for the tests that create one
        ls.api("POST", "/api/token/blacklist/", json={"refresh": pat})
