"""A real Label Studio 1.23 server on 127.0.0.1, started from its own virtual environment.

Used by the end-to-end tests (``tests/e2e/conftest.py``) and by ``bench/bench_queue.py
--label-studio``. The binary is ``ZEROLABEL_LS_BIN`` or ``label-studio`` on the PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.servers import free_port, stop, wait_for

TOKEN = "0123456789abcdef0123456789abcdef01234567"
EXAMPLE_CONFIG = (Path(__file__).resolve().parents[1] / "examples" / "label_config.xml").read_text()


@dataclass
class LabelStudio:
    url: str
    token: str
    document_root: Path
    log: Path | None = None  # the server's output (stdout and stderr)
    data: Path | None = None  # LABEL_STUDIO_BASE_DATA_DIR (uploads in media/upload/<project>/)

    def create_project(self, title: str) -> int:
        """A project with the example config (RectangleLabels + BrushLabels, label "object")."""
        body = {"title": title, "label_config": EXAMPLE_CONFIG}
        return int(self.api("POST", "/api/projects", json=body).json()["id"])

    def add_local_storage(self, project: int, folder: Path) -> None:
        """Serve ``folder`` (below the document root) as local files to ``project``."""
        body = {
            "project": project,
            "path": str(folder),
            "use_blob_urls": True,
            "title": folder.name,
        }
        self.api("POST", "/api/storages/localfiles", json=body)

    def predictions(self, project: int) -> list[dict]:
        return self.api("GET", f"/api/predictions?project={project}").json()

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Token {self.token}", **kwargs.pop("headers", {})}
        response = requests.request(method, self.url + path, headers=headers, timeout=120, **kwargs)
        assert response.status_code < 400, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response


def label_studio_binary() -> str | None:
    return os.environ.get("ZEROLABEL_LS_BIN") or shutil.which("label-studio")


@contextlib.contextmanager
def label_studio_server(
    binary: str, data: Path, root: Path, start_timeout_s: float = 300
) -> Iterator[LabelStudio]:
    """Label Studio with its data in ``data`` and local files served from below ``root``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        k: v for k, v in os.environ.items() if k not in ("USERNAME", "PASSWORD", "HOST", "PORT")
    }  # LS reads bare names too
    env |= {
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": "e2e@zerolabel.test",
        "LABEL_STUDIO_PASSWORD": "zerolabel-e2e-pass",
        "LABEL_STUDIO_USER_TOKEN": TOKEN,
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root),
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LABEL_STUDIO_HOST": url,
        "DISABLE_SIGNUP_WITHOUT_LINK": "true",
    }
    log = (data / "server.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            "start",
            "--no-browser",
            "--host",
            "127.0.0.1",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--enable-legacy-api-token",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=data,
    )
    try:
        wait_for(
            lambda: requests.get(f"{url}/health", timeout=2).json()["status"] == "UP",
            start_timeout_s,
            "Label Studio",
            poll_s=1,
        )
        yield LabelStudio(url, TOKEN, root, data / "server.log", data)
    finally:
        stop(process, timeout_s=20)
        log.close()
