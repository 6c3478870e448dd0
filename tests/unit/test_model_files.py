"""Model files projects name: names checked where they enter, found only inside the models
folder, refused by /setup when the folder lacks them, and one model_version per file."""

from __future__ import annotations

import os
from pathlib import Path

import fakeredis
import pytest
from zerolabel import model_files
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.options import MODEL_KEYS, ProjectOptions
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings, WorkerSettings
from zerolabel_backend.app import create_app

CONFIG = (Path(__file__).resolve().parents[2] / "examples" / "label_config.xml").read_text()
DETECTOR_A = "cad-0123456789.pt"
DETECTOR_B = "cad-abcdefabcd.pt"
RPS = "rps-0123456789ab.pt"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (DETECTOR_A, DETECTOR_B, RPS, "notes.txt"):
        (folder / name).write_bytes(b"x")
    return folder


def _settings(models: Path | str | None, **env: str) -> BackendSettings:
    values = {"ZEROLABEL_MODELS_DIR": str(models)} if models is not None else {}
    return BackendSettings.from_env({**values, **env})


# --- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../cad-0123456789.pt", id="parent"),
        pytest.param("sub/cad-0123456789.pt", id="folder"),
        pytest.param("/etc/cad-0123456789.pt", id="absolute"),
        pytest.param("cad-0123456789.pt/..", id="dot-segment"),
        pytest.param("cad-012345678.pt", id="short-digest"),
        pytest.param("cad-0123456789.pth", id="suffix"),
        pytest.param("CAD-0123456789.pt", id="case"),
        pytest.param("cad-0123456789.pt\n", id="newline"),
        pytest.param("checkpoint_last.pt", id="training-checkpoint"),
        pytest.param(7, id="number"),
        pytest.param(None, id="null"),
    ],
)
def test_only_bare_detector_names_of_the_exported_form_pass(name):
    with pytest.raises(ConfigError, match="not a detector's file name: give the bare name"):
        model_files.check_detector_name(name)


def test_detector_and_fitted_names_of_the_written_forms_pass():
    assert model_files.check_detector_name(DETECTOR_A) == DETECTOR_A
    assert model_files.check_fitted_name(RPS, "rps") == RPS
    assert model_files.check_fitted_name("found-head-0123456789ab.pt", "found-head")
    with pytest.raises(ConfigError, match="holds a 'rps' fit, but the method reads 'found-head'"):
        model_files.check_fitted_name(RPS, "found-head")
    with pytest.raises(ConfigError, match="not a fitted file's name"):
        model_files.check_fitted_name("../rps-0123456789ab.pt")


# --- files in the folder -----------------------------------------------------------------------


def test_a_missing_file_is_named_with_the_folder_and_what_it_holds(models):
    assert model_files.locate(models, DETECTOR_A, "detector") == (models / DETECTOR_A).resolve()
    with pytest.raises(ConfigError) as raised:
        model_files.locate(models, "cad-ffffffffff.pt", "detector")
    message = str(raised.value)
    assert f"'cad-ffffffffff.pt' is not in ZEROLABEL_MODELS_DIR ({models})" in message
    assert f"which holds {DETECTOR_A}, {DETECTOR_B}:" in message  # detectors only, sorted
    assert "notes.txt" not in message and RPS not in message
    assert "zerolabel use --project ID METHOD --detector FILE" in message
    with pytest.raises(ConfigError, match=f"fitted file .* which holds {RPS}:"):
        model_files.locate(models, "rps-ffffffffffff.pt", "fitted file")


def test_links_out_of_the_folder_and_other_entries_are_refused(models, tmp_path):
    outside = tmp_path / "outside.pt"
    outside.write_bytes(b"secret")
    os.symlink(outside, models / "cad-1111111111.pt")
    with pytest.raises(ConfigError, match="leads out of ZEROLABEL_MODELS_DIR"):
        model_files.locate(models, "cad-1111111111.pt", "detector")
    (models / "cad-2222222222.pt").mkdir()
    with pytest.raises(ConfigError, match="is not a regular file"):
        model_files.locate(models, "cad-2222222222.pt", "detector")
    os.symlink(models / DETECTOR_A, models / "cad-3333333333.pt")  # a link inside: its target
    assert model_files.locate(models, "cad-3333333333.pt", "detector").name == DETECTOR_A
    with pytest.raises(ConfigError, match="bare file name"):
        model_files.locate(models, "../outside.pt", "detector")
    with pytest.raises(ConfigError, match="is not a folder"):
        model_files.locate(tmp_path / "nowhere", DETECTOR_A, "detector")


# --- a project's Extra params ------------------------------------------------------------------


def test_each_detector_a_project_names_is_a_model_version_of_its_own(models):
    settings = _settings(models)
    specs = [
        ProjectOptions.parse({"method": "cad", "detector": name}).spec(settings, masks=True)
        for name in (DETECTOR_A, DETECTOR_B)
    ]
    assert [(s.backbone, s.weights) for s in specs] == [("cad", DETECTOR_A), ("cad", DETECTOR_B)]
    versions = {spec.model_version() for spec in specs}
    assert len(versions) == 2 and all(v.startswith("zerolabel-cad-cad-") for v in versions)
    again = ProjectOptions.parse({"method": "cad", "detector": DETECTOR_A})
    assert again.spec(settings, masks=True).model_version() == specs[0].model_version()


def test_the_default_detector_stays_for_projects_that_name_none(models):
    settings = _settings(
        models, ZEROLABEL_CAD_CHECKPOINT="/weights/cad-9999999999.pt", ZEROLABEL_METHOD="lost"
    )
    spec = ProjectOptions.parse({"method": "cad"}).spec(settings, masks=False)
    assert spec.weights == "cad-9999999999.pt"  # ZEROLABEL_CAD_CHECKPOINT, as before
    named = ProjectOptions.parse({"method": "cad", "detector": "cad-9999999999.pt"})
    assert named.spec(settings, masks=False) == spec  # the default by its name: not looked up


def test_a_fitted_file_is_named_like_a_detector(models):
    settings = _settings(models)
    spec = ProjectOptions.parse({"method": "rps", "fitted": RPS}).spec(settings, masks=True)
    assert spec.fitted == RPS
    plain = _settings(models, ZEROLABEL_FITTED="/elsewhere/rps-aaaaaaaaaaaa.pt")
    default = ProjectOptions.parse({"method": "rps"}).spec(plain, masks=True)
    assert default.fitted == "rps-aaaaaaaaaaaa.pt"
    assert default.model_version() != spec.model_version()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            {"method": "lost", "detector": DETECTOR_A},
            'extra param "detector" is the detector of method "cad", not of \'lost\'',
            id="detector-for-a-vit-method",
        ),
        pytest.param(
            {"method": "lost", "fitted": RPS},
            "method 'lost' reads no fitted file",
            id="fitted-for-a-method-without",
        ),
        pytest.param(
            {"method": "found", "fitted": RPS},
            "holds a 'rps' fit, but the method reads 'found-head'",
            id="fitted-of-another-kind",
        ),
        pytest.param(
            {"method": "cad", "detector": "../../etc/passwd"},
            "not a detector's file name",
            id="traversal",
        ),
        pytest.param(
            {"method": "cad", "detector": {"name": DETECTOR_A}},
            "not a detector's file name",
            id="not-a-string",
        ),
        pytest.param(
            {"method": "cad", "detector": "cad-ffffffffff.pt"},
            "is not in ZEROLABEL_MODELS_DIR",
            id="missing",
        ),
    ],
)
def test_extra_params_naming_files_are_refused_with_the_reason(models, extra, message):
    with pytest.raises(ConfigError) as raised:
        ProjectOptions.parse(extra).spec(_settings(models), masks=True)
    assert message in str(raised.value)


def test_without_a_models_folder_a_named_file_is_refused_and_an_unseen_one_is_left_to_workers(
    tmp_path,
):
    options = ProjectOptions.parse({"method": "cad", "detector": DETECTOR_A})
    with pytest.raises(ConfigError, match="needs ZEROLABEL_MODELS_DIR"):
        options.spec(_settings(None), masks=True)
    unseen = _settings(tmp_path / "mounted-on-the-workers-only")
    assert options.spec(unseen, masks=True).weights == DETECTOR_A


def test_model_keys_are_the_ones_that_choose_the_model():
    assert {"method", "detector", "fitted", "params", "tau", "backbone"} <= MODEL_KEYS
    assert not {"label", "masks"} & MODEL_KEYS


def test_the_settings_read_the_folder_and_how_many_models_to_keep(models):
    settings = WorkerSettings.from_env(
        {"ZEROLABEL_MODELS_DIR": str(models), "ZEROLABEL_WORKER_MODELS": "5"}
    )
    assert (settings.models_dir, settings.worker_models) == (str(models), 5)
    assert WorkerSettings.from_env({}).worker_models == 3
    with pytest.raises(ConfigError, match="ZEROLABEL_WORKER_MODELS='0' must be >= 1"):
        WorkerSettings.from_env({"ZEROLABEL_WORKER_MODELS": "0"})


# --- /setup --------------------------------------------------------------------------------------


@pytest.fixture
def backend(models):
    settings = _settings(models, ZEROLABEL_WAIT_TIMEOUT_S="0.2")
    return create_app(PredictionService(settings, redis=fakeredis.FakeRedis())).test_client()


def _setup(client, extra):
    body = {"project": "3.1700000000", "schema": CONFIG, "extra_params": extra}
    return client.post("/setup", json=body)


def test_setup_answers_a_version_per_detector_and_refuses_one_the_folder_lacks(backend, models):
    versions = [
        _setup(backend, {"method": "cad", "detector": name}).get_json()["model_version"]
        for name in (DETECTOR_A, DETECTOR_B)
    ]
    assert len(set(versions)) == 2
    refused = _setup(backend, {"method": "cad", "detector": "cad-ffffffffff.pt"})
    assert refused.status_code == 400
    error = refused.get_json()["error"]
    assert f"is not in ZEROLABEL_MODELS_DIR ({models}), which holds {DETECTOR_A}" in error
    outside = _setup(backend, {"method": "cad", "detector": "../weights/cad-0123456789.pt"})
    assert outside.status_code == 400 and "bare name" in outside.get_json()["error"]
