"""A project served adapted weights: its Extra param ``checkpoint`` names a file of the models
folder, ``/setup`` refuses what no worker could load, the model_version follows the file, and a
worker loads it on the project's first job while other projects keep the general weights."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import fakeredis
import pytest
import torch
from zerolabel.contract import DiscoverySpec
from zerolabel.errors import ConfigError, WeightsError
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.pipeline import ModelStore
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings, WorkerSettings
from zerolabel_backend.app import create_app

from tests.unit.test_app import CONFIG, _setup


def adapted_file(folder: Path, source: Path, backbone: str = "vit_small_patch16_224") -> str:
    """A copy of ``source`` named as zerolabel adapt names its weights, with its metadata."""
    data = source.read_bytes()
    name = f"adapted-{hashlib.sha256(data).hexdigest()[:12]}.pth"
    (folder / name).write_bytes(data)
    (folder / name).with_suffix(".json").write_text(json.dumps({"backbone": backbone}))
    return name


@pytest.fixture
def models(tmp_path: Path, dino_checkpoint: Path) -> tuple[Path, str]:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder, adapted_file(folder, dino_checkpoint)


def _settings(tiny_env: dict[str, str], folder: Path) -> BackendSettings:
    env = {**tiny_env, "ZEROLABEL_MODELS_DIR": str(folder), "LABEL_STUDIO_URL": "http://ls:8080"}
    return BackendSettings.from_env(env)


def test_a_projects_checkpoint_is_its_weights_and_its_model_version(models, tiny_env):
    folder, name = models
    settings = _settings(tiny_env, folder)
    general = ProjectOptions.parse({}).spec(settings, masks=False)
    spec = ProjectOptions.parse({"checkpoint": name}).spec(settings, masks=False)
    assert spec.weights == name and general.weights == "dino_vits16_depth2.pth"
    assert spec.model_version() != general.model_version()
    assert ProjectOptions.parse({"checkpoint": name}).spec(settings, masks=False) == spec


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param({"checkpoint": "adapted-000000000000.pth"}, "is not in", id="missing"),
        pytest.param({"checkpoint": "../adapted-000000000000.pth"}, "bare name", id="a-path"),
        pytest.param({"checkpoint": "dino.pth"}, "not the name of adapted", id="other-form"),
        pytest.param({"checkpoint": 3}, "not the name of adapted", id="not-a-string"),
    ],
)
def test_names_no_worker_could_load_are_refused(models, tiny_env, extra, message):
    folder, _ = models
    with pytest.raises(ConfigError, match=message):
        ProjectOptions.parse(extra).spec(_settings(tiny_env, folder), masks=False)


def test_the_refusal_lists_the_checkpoints_the_folder_holds(models, tiny_env):
    folder, name = models
    with pytest.raises(ConfigError, match=f"which holds {name}: copy the file zerolabel adapt"):
        ProjectOptions.parse({"checkpoint": "adapted-000000000000.pth"}).spec(
            _settings(tiny_env, folder), masks=False
        )


def test_weights_of_another_backbone_or_for_a_detector_are_refused(models, tiny_env, tmp_path):
    folder, name = models
    settings = _settings(tiny_env, folder)
    (tmp_path / "base.pth").write_bytes((folder / name).read_bytes() + b"\0")  # other bytes
    other = adapted_file(folder, tmp_path / "base.pth", backbone="dino_vitb16")
    with pytest.raises(ConfigError, match="holds weights of backbone 'dino_vitb16'.*\"backbone\""):
        ProjectOptions.parse({"checkpoint": other}).spec(settings, masks=False)
    detector = {"checkpoint": name, "method": "cad", "detector": "cad-0123456789.pt"}
    with pytest.raises(ConfigError, match="runs no backbone"):
        ProjectOptions.parse(detector).spec(settings, masks=False)


def test_setup_refuses_a_checkpoint_the_models_folder_lacks(models, tiny_env):
    folder, name = models
    client = create_app(
        PredictionService(_settings(tiny_env, folder), redis=fakeredis.FakeRedis())
    ).test_client()
    reply = _setup(
        client, schema=CONFIG, extra=json.dumps({"checkpoint": "adapted-0123456789ab.pth"})
    )
    assert reply.status_code == 400 and name in reply.get_json()["error"]
    accepted = _setup(client, schema=CONFIG, extra=json.dumps({"checkpoint": name}))
    general = _setup(client, schema=CONFIG, project="4.1700000000")
    assert accepted.status_code == 200 and general.status_code == 200
    assert accepted.get_json()["model_version"] != general.get_json()["model_version"]


# --- workers ------------------------------------------------------------------------------------


def _store(tiny_env, folder, worker_models=3):
    env = {
        **tiny_env,
        "ZEROLABEL_MODELS_DIR": str(folder),
        "ZEROLABEL_WORKER_MODELS": str(worker_models),
    }
    return ModelStore(WorkerSettings.from_env(env))


def _spec(settings: WorkerSettings, weights: str | None = None) -> DiscoverySpec:
    overrides = {"checkpoint": weights} if weights else {}
    return settings.spec(**overrides)


def test_a_worker_loads_a_projects_checkpoint_on_first_use_and_keeps_it(models, tiny_env, tmp_path):
    folder, name = models
    changed = torch.load(folder / name, weights_only=True)
    changed["blocks.0.attn.qkv.bias"] = changed["blocks.0.attn.qkv.bias"] + 1.0
    torch.save(changed, tmp_path / "changed.pth")
    other = adapted_file(folder, tmp_path / "changed.pth")
    store = _store(tiny_env, folder)
    general = store.backbone(_spec(store.settings))
    first = store.backbone(_spec(store.settings, other))
    assert store.backbone(_spec(store.settings, other)) is first  # kept
    assert first is not general and store.backbone(_spec(store.settings)) is general
    bias = first.model.state_dict()["blocks.0.attn.qkv.bias"]
    assert torch.equal(bias, changed["blocks.0.attn.qkv.bias"])
    assert not torch.equal(bias, general.model.state_dict()["blocks.0.attn.qkv.bias"])
    assert first.weights_id.startswith("file:")


def test_a_renamed_or_missing_checkpoint_is_refused_by_the_worker(
    models, tiny_env, dino_checkpoint
):
    folder, name = models
    store = _store(tiny_env, folder)
    renamed = "adapted-abcdefabcdef.pth"
    shutil.copy(folder / name, folder / renamed)
    with pytest.raises(WeightsError, match="is not the file its name names"):
        store.backbone(_spec(store.settings, renamed))
    with pytest.raises(ConfigError, match="is not in"):
        store.backbone(_spec(store.settings, "adapted-000000000000.pth"))
    alone = ModelStore(WorkerSettings.from_env(tiny_env))
    with pytest.raises(WeightsError, match="no ZEROLABEL_MODELS_DIR"):
        alone.backbone(_spec(alone.settings, name))
