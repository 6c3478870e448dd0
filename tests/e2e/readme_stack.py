"""A deployment as the README's "Without Docker" section runs it: env files written from
``docker/zerolabel.env.example``, ``zerolabel serve --env-file`` and ``zerolabel --env-file ...
worker`` started from the README's own lines, against a real Label Studio and redis-server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from redis import Redis

from tests.e2e.readme import DEPLOY, as_process, env_file, shell_lines, with_values
from tests.servers import ROOT, stop, wait_for, wait_for_workers

if TYPE_CHECKING:
    from tests.ls_server import LabelStudio

BASIC_AUTH = ("labelstudio", "readme-loop-password")
EXTRA_PARAMS: dict[str, Any] = {"masks": False, "max_side": 320}
"""The Extra params of the project's ML backend connection: boxes only, at 320 px, a model
version of their own, so a prelabel that ignored them would be seen. ``zerolabel use`` keeps
``masks`` and replaces ``max_side`` (a choice of the model)."""

SETTINGS_PREFIXES = ("ZEROLABEL_", "LABEL_STUDIO_", "BASIC_AUTH_", "REDIS_URL", "HF_HUB_OFFLINE")
"""Variables left out of the processes' environment: the env files give them (the environment
would win over a file)."""

TIMEOUT_S = 1200  # one command at most; generous, CI shares the cores


@dataclass
class Deployment:
    """Label Studio, Redis, the backend and the settings every process reads from its env file."""

    ls: LabelStudio
    redis_url: str
    tmp: Path
    settings: dict[str, str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    backend: subprocess.Popen[bytes] | None = None

    @property
    def backend_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env_file(self, name: str, **values: str) -> Path:
        """An env file like docker/zerolabel.env.example with the deployment's settings."""
        path = self.tmp / name
        path.write_text(env_file({**self.settings, **values}))
        return path

    def zerolabel(
        self, argv: list[str], settings: Path, cwd: Path
    ) -> subprocess.CompletedProcess[str]:
        """Run a README ``zerolabel ...`` line with ``--env-file settings``; output in stdout."""
        line = [argv[0], "--env-file", str(settings), *argv[1:]]
        return subprocess.run(
            as_process(line, sys.executable),
            cwd=cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )

    def serve(self, settings: Path) -> None:
        """(Re)start the backend with the README's ``zerolabel serve --env-file ...`` line."""
        if self.backend is not None:
            stop(self.backend)
        line = _deploy_line("serve")
        values = {"--env-file": str(settings), "--host": "127.0.0.1", "--port": str(self.port)}
        self.backend = self._spawn(with_values(line, values), "backend.log")
        wait_for(lambda: requests.get(f"{self.backend_url}/health", timeout=2).ok, 60, "backend")

    @contextlib.contextmanager
    def worker(self, settings: Path) -> Iterator[subprocess.Popen[bytes]]:
        """A worker started with the README's ``zerolabel --env-file ... worker`` line."""
        line = with_values(_deploy_line("worker"), {"--env-file": str(settings)})
        process = self._spawn(line, "worker.log")
        try:
            wait_for_workers(self.redis_url, 1, timeout_s=120)
            yield process
        finally:
            stop(process)

    def new_project(self, title: str, photos: tuple[str, ...]) -> int:
        """A project with the example config, the photos uploaded and the backend connected
        with basic auth and :data:`EXTRA_PARAMS`."""
        project = self.ls.create_project(title)
        for name in photos:
            with (ROOT / "examples" / "voc2007" / "JPEGImages" / name).open("rb") as handle:
                self.ls.api("POST", f"/api/projects/{project}/import", files={"file": handle})
        connection = {
            "project": project,
            "url": self.backend_url,
            "title": "zerolabel",
            "auth_method": "BASIC_AUTH",
            "basic_auth_user": BASIC_AUTH[0],
            "basic_auth_pass": BASIC_AUTH[1],
            "extra_params": EXTRA_PARAMS,
        }
        self.ls.api("POST", "/api/ml", json=connection)
        return project

    def tasks(self, project: int) -> list[dict[str, Any]]:
        reply = self.ls.api("GET", f"/api/tasks?project={project}&page_size=1000").json()
        return list(reply["tasks"])

    def label_config(self, project: int) -> str:
        return str(self.ls.api("GET", f"/api/projects/{project}").json()["label_config"])

    def setup_version(self, project: int, extra_params: dict[str, Any] | None) -> str:
        """The model_version the running backend answers Label Studio's ``/setup`` with."""
        body = {
            "project": str(project),
            "schema": self.label_config(project),
            "hostname": self.ls.url,
            "extra_params": extra_params,
        }
        reply = requests.post(f"{self.backend_url}/setup", json=body, auth=BASIC_AUTH, timeout=30)
        assert reply.ok, reply.text
        return str(reply.json()["model_version"])

    def retrieve(self, project: int) -> None:
        """Label Studio's "Retrieve Predictions" on every task (it calls the backend)."""
        self.ls.api(
            "POST",
            f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
            json={"selectedItems": {"all": True, "excluded": []}},
        )

    def jobs(self) -> list[bytes]:
        """Every RQ job and queue entry in Redis."""
        redis = Redis.from_url(self.redis_url)
        return sorted(redis.scan_iter("rq:job:*")) + redis.lrange("rq:queue:zerolabel", 0, -1)

    def logs(self) -> str:
        return "".join(
            (self.tmp / name).read_text(errors="replace")
            for name in ("backend.log", "worker.log")
            if (self.tmp / name).exists()
        )

    def close(self) -> None:
        if self.backend is not None:
            stop(self.backend)

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.tmp / log).open("ab") as out:
            return subprocess.Popen(
                as_process(argv, sys.executable),
                cwd=self.tmp,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


@contextlib.contextmanager
def deployed(ls: LabelStudio, tiny_env: dict[str, str], tmp: Path) -> Iterator[Deployment]:
    """redis-server and the backend, started as the README says, from an env file with the tiny
    ViT on CPU, basic auth and a models folder; on exit, no token was written to the logs."""
    from tests.servers import free_port, redis_server

    (tmp / "home").mkdir()
    with redis_server(tmp) as (redis_url, _):
        settings = {
            **tiny_env,
            "REDIS_URL": redis_url,
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.token,
            "BASIC_AUTH_USER": BASIC_AUTH[0],
            "BASIC_AUTH_PASS": BASIC_AUTH[1],
            "ZEROLABEL_MODELS_DIR": str(tmp / "models"),
        }
        d = Deployment(ls, redis_url, tmp, settings, free_port(), process_env(tmp / "home"))
        try:
            d.serve(d.env_file("zerolabel.env"))
            yield d
        finally:
            d.close()
    assert ls.token not in d.logs(), "a token leaked into the logs"


def process_env(home: Path) -> dict[str, str]:
    """This environment without zerolabel's settings, with ``HOME`` (and so every default
    cache) in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    return {**env, "HOME": str(home)}


def _deploy_line(command: str) -> list[str]:
    (line,) = [line for line in shell_lines(DEPLOY) if line.command == command]
    return line.argv
