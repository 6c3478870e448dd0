"""Worker settings from the environment: defaults, parsing, strict failures."""

from __future__ import annotations

import pytest
from zerolabel.errors import ConfigError
from zerolabel.settings import BackendSettings, EnvReader, QueueSettings, WorkerSettings, parse_bool


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
    assert settings.max_side == 0 and settings.batch_size == 16  # 0: full resolution


def test_max_side_zero_means_full_resolution_and_unset_the_method_default():
    full = WorkerSettings.from_env({"ZEROLABEL_MAX_SIDE": "0", "ZEROLABEL_METHOD": "maskcut"})
    assert full.spec().max_side == 0 and full.spec().effective_max_side() is None
    default = WorkerSettings.from_env({"ZEROLABEL_MAX_SIDE": "", "ZEROLABEL_METHOD": "maskcut"})
    assert default.spec().max_side is None and default.spec().effective_max_side() == 480
    assert full.spec().model_version() != default.spec().model_version()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"ZEROLABEL_HALF": "ture"}, "not a boolean", id="typo-bool"),
        pytest.param({"ZEROLABEL_MAX_SIDE": "big"}, "not an integer", id="bad-int"),
        pytest.param({"ZEROLABEL_MAX_SIDE": "-1"}, "must be >= 0", id="negative"),
        pytest.param({"ZEROLABEL_POS_EMBED": "nearest"}, "'dino' or 'timm'", id="pos-rule"),
        pytest.param({"ZEROLABEL_BACKBONE_KWARGS": "[1]"}, "JSON object", id="kwargs-list"),
        pytest.param({"ZEROLABEL_BATCH_SIZE": "0"}, "BATCH_SIZE.*at least 1", id="zero-batch"),
        pytest.param({"ZEROLABEL_BATCH_SIZE": "-4"}, "BATCH_SIZE.*at least 1", id="neg-batch"),
        pytest.param({"ZEROLABEL_MAX_IMAGE_BYTES": "0"}, "must be >= 1", id="zero-bytes"),
        pytest.param({"ZEROLABEL_FETCH_TIMEOUT_S": "0"}, "seconds > 0", id="zero-fetch"),
        pytest.param({"ZEROLABEL_FETCH_TIMEOUT_S": "soon"}, "number of seconds", id="bad-fetch"),
        pytest.param({"ZEROLABEL_LEASE_S": "ten"}, "LEASE_S='ten' is not an integer", id="q-int"),
        pytest.param({"ZEROLABEL_JOB_RETRIES": "-1"}, "must be >= 0", id="q-negative"),
        pytest.param({"HF_HUB_OFFLINE": "yep"}, "HF_HUB_OFFLINE='yep' is not a boolean", id="hf"),
    ],
)
def test_bad_values_fail_at_start(env, message):
    with pytest.raises(ConfigError, match=message):
        WorkerSettings.from_env(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"ZEROLABEL_WAIT_TIMEOUT_S": "-1"}, "seconds >= 0", id="negative-wait"),
        pytest.param({"ZEROLABEL_WAIT_TIMEOUT_S": "nan"}, "number of seconds", id="nan-wait"),
        pytest.param({"ZEROLABEL_RESULT_TTL_S": "1d"}, "not an integer", id="queue-from-backend"),
    ],
)
def test_backend_values_fail_at_start(env, message):
    with pytest.raises(ConfigError, match=message):
        BackendSettings.from_env(env)


def test_one_reader_types_every_kind_of_value():
    read = EnvReader({"N": " 12 ", "F": "0.5", "B": "off", "E": "", "J": '{"depth": 2}'})
    assert (read.integer("N"), read.number("F"), read.flag("B")) == (12, 0.5, False)
    assert read.integer("E") is None and read.number("missing") is None and read.flag("E") is None
    assert read.json_object("J") == {"depth": 2}
    queue = QueueSettings.from_env({"ZEROLABEL_LEASE_S": "4", "ZEROLABEL_JOB_RETRIES": "0"})
    assert (queue.lease_s, queue.retries) == (4, 0)
    backend = BackendSettings.from_env({"ZEROLABEL_WAIT_TIMEOUT_S": "0", "ZEROLABEL_LABEL": "car"})
    assert (backend.wait_timeout_s, backend.label) == (0.0, "car")


def test_parse_bool_is_strict():
    assert parse_bool("X", "Yes") and not parse_bool("X", "0")
    with pytest.raises(ConfigError):
        parse_bool("X", "maybe")


def test_precision_and_compile_are_read_and_checked():
    settings = WorkerSettings.from_env(
        {"ZEROLABEL_PRECISION": "bf16", "ZEROLABEL_COMPILE": "max-autotune"}
    )
    assert (settings.precision, settings.compile_mode) == ("bf16", "max-autotune")
    assert WorkerSettings.from_env({"ZEROLABEL_COMPILE": "off"}).compile_mode is None
    with pytest.raises(ConfigError, match="ZEROLABEL_PRECISION / --precision='fp8'"):
        WorkerSettings.from_env({"ZEROLABEL_PRECISION": "fp8"})
    with pytest.raises(ConfigError, match="ZEROLABEL_COMPILE / --compile='fast'"):
        WorkerSettings.from_env({"ZEROLABEL_COMPILE": "fast"})
