"""Compose's Redis asks for the password of the env file, and the processes that read the same
file get in: its command run with a real redis-server on this machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError
from zerolabel.queue.dispatch import connect
from zerolabel.settings import QueueSettings

from tests.servers import free_port, wait_for
from tests.unit.test_deployment import _compose


def _redis_command(conf: Path, port: int, tmp: Path) -> str:
    """Compose's command for its Redis as the container runs it (``config`` keeps ``$$``, which
    compose turns into ``$``), on this host's port and folders."""
    config = json.loads(_compose("config", "--format", "json").stdout)
    service = config["services"]["redis"]
    assert service["command"][:2] == ["sh", "-c"]
    script = service["command"][2].replace("$$", "$").replace("/tmp/redis.conf", str(conf))
    local = f" --port {port} --bind 127.0.0.1 --dir {tmp} --appendonly no"
    return script.replace("--appendonly yes", local)


def test_compose_redis_needs_the_env_files_password_and_every_process_reads_it(tmp_path):
    port = free_port()
    command = _redis_command(tmp_path / "redis.conf", port, tmp_path)
    password = "s3cret-from-the-env-file"
    server = subprocess.Popen(
        ["sh", "-c", command], env={"PATH": "/usr/bin:/bin", "REDIS_PASSWORD": password}
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        with_password = connect(QueueSettings(redis_url=url, redis_password=password))
        wait_for(with_password.ping, 10, "compose's redis command")
        with pytest.raises((AuthenticationError, ResponseError), match="(?i)auth"):
            Redis.from_url(url).set("zerolabel:probe", "1")
        with pytest.raises((AuthenticationError, ResponseError)):
            connect(QueueSettings(redis_url=url, redis_password="wrong")).ping()
        assert (tmp_path / "redis.conf").stat().st_mode & 0o077 == 0  # only its owner reads it
    finally:
        server.terminate()
        server.wait(10)


def test_compose_redis_refuses_to_start_without_a_password(tmp_path):
    command = _redis_command(tmp_path / "redis.conf", free_port(), tmp_path)
    ran = subprocess.run(
        ["sh", "-c", command], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert ran.returncode != 0 and "set REDIS_PASSWORD" in ran.stderr
    assert not (tmp_path / "redis.conf").exists()
