"""What a real Label Studio 1.23 shows when the backend refuses a /setup: our reason, by name.

Label Studio keeps only ``str(HTTPError)`` of a refused /setup, "400 Client Error: <reason
phrase> for url: ...": in its answer to Connect Model (and to an edit of the connection), and as
the connection's stored ``error_message`` when a later /setup fails. The backend
(``zerolabel serve``, basic auth on) runs as a real process; no worker is needed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.ls_server import LabelStudio
from tests.servers import ROOT, free_port, redis_server, stop, wait_for

pytestmark = pytest.mark.e2e

BASIC_AUTH = ("labelstudio", "connect-model-password")
UNKNOWN_PARAM = "unknown extra params ['colour']: allowed keys are"
NO_REGIONS = "labeling config has no <RectangleLabels> or <BrushLabels>"
CHOICES_ONLY = (
    '<View><Image name="image" value="$image"/>'
    '<Choices name="kind" toName="image"><Choice value="a"/></Choices></View>'
)


@contextlib.contextmanager
def _backend(
    ls: LabelStudio, tmp: Path, *, label_studio_url: str, port: int | None = None
) -> Iterator[str]:
    """``zerolabel serve`` on ``port`` (a free one by default) with ``LABEL_STUDIO_URL`` set to
    ``label_studio_url``; yields its URL."""
    port = port or free_port()
    with redis_server(tmp) as (redis_url, _), (tmp / f"backend-{port}.log").open("ab") as log:
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "LABEL_STUDIO_URL": label_studio_url,
            "LABEL_STUDIO_API_KEY": ls.token,
            "BASIC_AUTH_USER": BASIC_AUTH[0],
            "BASIC_AUTH_PASS": BASIC_AUTH[1],
            "ZEROLABEL_REQUIRE_BASIC_AUTH": "true",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "zerolabel.cli.main", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: requests.get(f"{url}/health", timeout=2).ok, 60, "backend")
            yield url
        finally:
            stop(server)


def _connection(project: int, url: str, **fields: Any) -> dict[str, Any]:
    """The body of Label Studio's Connect Model form."""
    return {
        "project": project,
        "url": url,
        "title": "zerolabel",
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": BASIC_AUTH[0],
        "basic_auth_pass": BASIC_AUTH[1],
        **fields,
    }


def _refused(reply: requests.Response) -> str:
    """Label Studio's validation error, as its UI shows it (every message, joined)."""
    assert reply.status_code == 400, (reply.status_code, reply.text)
    messages: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            messages.append(value)
        elif isinstance(value, list | dict):
            for item in value.values() if isinstance(value, dict) else value:
                collect(item)

    collect(reply.json())
    return "\n".join(messages)


def _post(ls: LabelStudio, path: str, body: dict[str, Any], method: str = "POST") -> Any:
    headers = {"Authorization": f"Token {ls.token}"}
    return requests.request(method, ls.url + path, json=body, headers=headers, timeout=60)


def _connections(ls: LabelStudio, project: int) -> list[dict[str, Any]]:
    return list(ls.api("GET", f"/api/ml?project={project}").json())


def test_connecting_with_an_unknown_extra_param_is_refused_naming_it(label_studio, tmp_path):
    ls = label_studio
    project = ls.create_project("zerolabel bad extra params")
    with _backend(ls, tmp_path, label_studio_url=ls.url) as backend:
        bad = _connection(project, backend, extra_params={"colour": "red"})
        shown = _refused(_post(ls, "/api/ml", bad))
        assert f"400 Client Error: {UNKNOWN_PARAM}" in shown
        assert f"for url: {backend}/setup" in shown
        assert _connections(ls, project) == []  # nothing was connected

        ml = _post(ls, "/api/ml", _connection(project, backend)).json()
        assert ml["state"] == "CO" and not ml["error_message"]
        edit = _connection(project, backend, extra_params={"colour": "red"})
        shown = _refused(_post(ls, f"/api/ml/{ml['id']}", edit, method="PATCH"))
        assert f"400 Client Error: {UNKNOWN_PARAM}" in shown

        # A /setup that fails later (the labeling config lost its boxes and masks) is stored
        # as the connection's error, which Label Studio's model settings show.
        ls.api("PATCH", f"/api/projects/{project}", json={"label_config": CHOICES_ONLY})
        stored = ls.api("GET", f"/api/ml/{ml['id']}").json()
        assert stored["state"] == "ER"
        assert f"400 Client Error: {NO_REGIONS}" in stored["error_message"]


def test_a_label_studio_the_backend_is_not_configured_for_is_named(label_studio, tmp_path):
    ls = label_studio
    project = ls.create_project("zerolabel hostname")
    elsewhere = "http://labelstudio.internal:8080"
    mismatch = (
        f"hostname {ls.url} is not the configured Label Studio (LABEL_STUDIO_URL={elsewhere}); "
        "add it to ZEROLABEL_LABEL_STUDIO_ALIASES"
    )
    port = free_port()
    with _backend(ls, tmp_path, label_studio_url=elsewhere, port=port) as backend:
        shown = _refused(_post(ls, "/api/ml", _connection(project, backend)))
        assert f"400 Client Error: {mismatch}" in shown
    with _backend(ls, tmp_path, label_studio_url=ls.url, port=port) as backend:
        ml = _post(ls, "/api/ml", _connection(project, backend)).json()
        assert ml["state"] == "CO"
    # The same backend, restarted with another LABEL_STUDIO_URL: the next /setup fails.
    with _backend(ls, tmp_path, label_studio_url=elsewhere, port=port):
        stored = ls.api("GET", f"/api/ml/{ml['id']}").json()
    assert stored["state"] == "ER" and f"400 Client Error: {mismatch}" in stored["error_message"]
