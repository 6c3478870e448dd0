"""Env files: read as docker compose reads them (checked against compose itself)."""

from __future__ import annotations

import json

import pytest
from zerolabel.envfile import load_env_file
from zerolabel.errors import ConfigError

from tests.unit.test_deployment import _compose_bin


def test_env_file_lines_are_read_and_the_environment_wins(tmp_path):

    path = tmp_path / "zerolabel.env"
    path.write_text(
        "# comment\n\nREDIS_URL=redis://db:6379/0\nexport ZEROLABEL_METHOD='maskcut'\n"
        'LABEL_STUDIO_URL="http://ls:8080"\nZEROLABEL_QUEUE=from-file\n'
    )
    env = {"ZEROLABEL_QUEUE": "from-environment"}
    load_env_file(path, env)
    assert env == {
        "REDIS_URL": "redis://db:6379/0",
        "ZEROLABEL_METHOD": "maskcut",
        "LABEL_STUDIO_URL": "http://ls:8080",
        "ZEROLABEL_QUEUE": "from-environment",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("JUST_A_NAME\n", "line 1: expected NAME=value", id="no-equals"),
        pytest.param("OK=1\n2BAD=x\n", "line 2: expected NAME=value", id="bad-name"),
    ],
)
def test_a_malformed_env_file_names_the_line(tmp_path, text, message):

    path = tmp_path / "bad.env"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_env_file(path, {})


def test_a_missing_env_file_is_a_config_error(tmp_path):

    with pytest.raises(ConfigError, match="env file"):
        load_env_file(tmp_path / "missing.env", {})


LINES = [
    "PLAIN=value",
    "COMMENTED=pw # the comment",
    "HASH_IN_VALUE=pw#not-a-comment",
    'DOUBLE="pw" # comment after the quote',
    'DOUBLE_HASH="a # b"',
    "SINGLE='pw' # comment",
    "SINGLE_LITERAL='$PLAIN ${PLAIN} a\\tb'",
    "SINGLE_ESCAPED='it\\'s'",
    'ESCAPES="a\\tb\\\\c \\"q\\""',
    "SPACES=  padded value  ",
    "REFERENCE=$PLAIN-x",
    "BRACED=${PLAIN}y",
    "DEFAULTED=${UNSET_ANYWHERE:-fallback}",
    "DEFAULT_EMPTY=${EMPTY:-used}",
    "DASH_DEFAULT=${EMPTY-kept-empty}",
    "EMPTY=",
    "DOLLARS=a$$b",
    'DOUBLE_REFERENCE="${PLAIN} and $PLAIN"',
    "export EXPORTED=yes",
]


def _compose_reads(path) -> dict[str, str]:
    """What docker compose gives a service whose env_file is ``path``."""
    import subprocess

    compose = path.parent / "compose.yaml"
    compose.write_text(f"services:\n  s:\n    image: x\n    env_file: [{path.name}]\n")
    ran = subprocess.run(
        [_compose_bin(), "-f", str(compose), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=path.parent,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert ran.returncode == 0, ran.stderr
    environment: dict[str, str] = json.loads(ran.stdout)["services"]["s"]["environment"]
    return {name: value.replace("$$", "$") for name, value in environment.items()}  # unescaped


def test_every_line_reads_as_docker_compose_reads_it(tmp_path):
    path = tmp_path / "zerolabel.env"
    path.write_text("\n".join(["# a comment", "", *LINES]) + "\n")
    ours: dict[str, str] = {}
    load_env_file(path, ours)
    theirs = _compose_reads(path)
    assert {name: ours[name] for name in theirs} == theirs
    assert ours["DOUBLE"] == ours["COMMENTED"] == ours["SINGLE"] == "pw"  # the reported case


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('OPEN="never closed', "the value's \" quote is not closed"),
        ('AFTER="pw" trailing', "unexpected 'trailing' after the closing quote"),
    ],
)
def test_a_line_compose_would_not_read_names_its_line(tmp_path, line, message):
    path = tmp_path / "bad.env"
    path.write_text(f"OK=1\n{line}\n")
    with pytest.raises(ConfigError, match=f"line 2: {message}"):
        load_env_file(path, {})
