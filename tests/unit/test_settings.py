"""Worker settings from the environment: defaults, parsing, strict failures."""

from __future__ import annotations

import pytest
from zerolabel.errors import ConfigError
from zerolabel.settings import WorkerSettings, parse_bool


def test_defaults_without_environment():
    settings = WorkerSettings.from_env({})
    assert settings == WorkerSettings()
    assert settings.backbone == "dino_vits16" and settings.checkpoint is None


def test_values_are_parsed():
    settings = WorkerSettings.from_env(
        {
            "ZEROLABEL_BACKBONE": "dino_vitb8",
            "ZEROLABEL_CHECKPOINT": "/weights/dino.pth",
            "ZEROLABEL_BACKBONE_KWARGS": '{"depth": 2}',
            "ZEROLABEL_HALF": "true",
            "ZEROLABEL_METHOD": "maskcut",
            "ZEROLABEL_MAX_SIDE": "0",
            "ZEROLABEL_BATCH_SIZE": "16",
        }
    )
    assert settings.backbone == "dino_vitb8" and settings.checkpoint == "/weights/dino.pth"
    assert settings.backbone_kwargs == {"depth": 2} and settings.half
    assert settings.max_side is None and settings.batch_size == 16


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"ZEROLABEL_HALF": "ture"}, "not a boolean", id="typo-bool"),
        pytest.param({"ZEROLABEL_MAX_SIDE": "big"}, "not an integer", id="bad-int"),
        pytest.param({"ZEROLABEL_MAX_SIDE": "-1"}, "must be >= 0", id="negative"),
        pytest.param({"ZEROLABEL_POS_EMBED": "nearest"}, "'dino' or 'timm'", id="pos-rule"),
        pytest.param({"ZEROLABEL_BACKBONE_KWARGS": "[1]"}, "JSON object", id="kwargs-list"),
    ],
)
def test_bad_values_fail_at_start(env, message):
    with pytest.raises(ConfigError, match=message):
        WorkerSettings.from_env(env)


def test_parse_bool_is_strict():
    assert parse_bool("X", "Yes") and not parse_bool("X", "0")
    with pytest.raises(ConfigError):
        parse_bool("X", "maybe")
