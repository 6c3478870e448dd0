"""ModelStore loads the detectors and fitted files specs name from the models folder, keeps the
last few (least recently used dropped first), and refuses names or files that are not theirs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from zerolabel import pipeline
from zerolabel.contract import DiscoveryRequest, DiscoverySpec
from zerolabel.errors import ConfigError, WeightsError
from zerolabel.fitted import Fitted, save_fitted
from zerolabel.io.images import LoadedImage
from zerolabel.pipeline import ModelStore
from zerolabel.queue.runtime import Loaded, WorkerRuntime
from zerolabel.settings import WorkerSettings

BACKBONE = "vit_small_patch16_224"


def detector_file(folder: Path, content: bytes) -> str:
    """A file named as train-cad names its exports: by the digest of its bytes."""
    name = f"cad-{hashlib.sha256(content).hexdigest()[:10]}.pt"
    (folder / name).write_bytes(content)
    return name


def cad(name: str) -> DiscoverySpec:
    return DiscoverySpec(method="cad", backbone="cad", weights=name)


class Loads:
    """Stands in for reading detectors: one distinct object per load, and the paths read."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, path: Path) -> torch.nn.Module:
        self.paths.append(path.name)
        return torch.nn.Identity()


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


@pytest.fixture
def store(models: Path) -> tuple[ModelStore, Loads]:
    store = ModelStore(WorkerSettings(models_dir=str(models), worker_models=2))
    loads = Loads()
    store.load_detector = loads  # type: ignore[method-assign]
    return store, loads


def test_detectors_load_by_name_once_and_the_least_recently_used_is_dropped(store, models):
    store, loads = store
    a, b, c = (detector_file(models, bytes([n]) * 64) for n in range(3))
    first = store.detector(cad(a))
    assert store.detector(cad(a)) is first  # kept
    store.detector(cad(b))
    store.detector(cad(a))  # a is now the most recently used
    store.detector(cad(c))  # two at most: b goes
    assert loads.paths == [a, b, c]
    assert [Path(key).name for key in store.detectors.keys()] == [a, c]
    assert store.detector(cad(a)) is first
    store.detector(cad(b))  # read again
    assert loads.paths == [a, b, c, b]


def test_the_default_detector_is_served_by_its_name_without_the_folder(tmp_path, models):
    default = tmp_path / "anywhere" / "my-detector.pt"
    store = ModelStore(WorkerSettings(cad_checkpoint=str(default), models_dir=str(models)))
    loads = Loads()
    store.load_detector = loads  # type: ignore[method-assign]
    store.runner(cad("my-detector.pt"))
    assert loads.paths == ["my-detector.pt"]


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        pytest.param("../cad-0123456789.pt", ConfigError, "bare name", id="traversal"),
        pytest.param("/etc/passwd", ConfigError, "bare name", id="absolute"),
        pytest.param("cad-ffffffffff.pt", ConfigError, "is not in ZEROLABEL_MODELS_DIR", id="gone"),
    ],
)
def test_names_that_are_not_files_of_the_folder_are_refused_before_loading(
    store, models, name, error, message
):
    store, loads = store
    detector_file(models, b"kept")
    with pytest.raises(error, match=message):
        store.runner(cad(name))
    assert loads.paths == []


def test_a_renamed_or_changed_detector_is_refused(store, models):
    store, loads = store
    name = detector_file(models, b"trained weights")
    (models / name).write_bytes(b"other weights")
    with pytest.raises(WeightsError, match="is not the file its name names"):
        store.detector(cad(name))
    assert loads.paths == []


def test_a_file_that_is_not_a_detector_is_refused_when_read(models):
    buffer = models / "foreign"
    torch.save({"weights": torch.zeros(2)}, buffer)
    name = detector_file(models, buffer.read_bytes())
    store = ModelStore(WorkerSettings(models_dir=str(models), device="cpu"))
    with pytest.raises(WeightsError, match="is not a zerolabel CAD checkpoint"):
        store.detector(cad(name))


def test_without_a_folder_the_messages_name_both_settings(tmp_path):
    with pytest.raises(ConfigError, match="ZEROLABEL_CAD_CHECKPOINT, or ZEROLABEL_MODELS_DIR"):
        ModelStore(WorkerSettings()).runner(cad("cad-0123456789.pt"))
    mine = ModelStore(WorkerSettings(cad_checkpoint=str(tmp_path / "cad-mine.pt")))
    with pytest.raises(WeightsError, match="same ZEROLABEL_CAD_CHECKPOINT, or the same ZEROL"):
        mine.runner(cad("cad-0123456789.pt"))


# --- fitted files ------------------------------------------------------------------------------


def fit(value: float) -> Fitted:
    return Fitted("rps", BACKBONE, "random", {"direction": torch.full((8,), value)})


def rps(name: str, backbone: str = BACKBONE) -> DiscoverySpec:
    return DiscoverySpec(method="rps", backbone=backbone, weights="random", fitted=name)


def test_fitted_files_load_by_name_and_are_kept_like_detectors(models, monkeypatch):
    names = [save_fitted(fit(v), models).name for v in (1.0, 2.0, 3.0)]
    read: list[str] = []
    real = pipeline.load_fitted

    def counting(path: Path, **kwargs: str) -> Fitted:
        read.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(pipeline, "load_fitted", counting)
    store = ModelStore(WorkerSettings(models_dir=str(models), worker_models=2))
    loaded = [store.fitted(rps(name)) for name in (names[0], names[1], names[0], names[2])]
    assert [float(f.tensors["direction"][0]) for f in loaded if f] == [1.0, 2.0, 1.0, 3.0]
    assert read == [names[0], names[1], names[2]]  # the second ask of names[0] was kept
    store.fitted(rps(names[1]))  # dropped for names[2]: read again
    assert read[-1] == names[1]


def test_a_fitted_file_is_checked_against_each_spec_that_names_it(models):
    name = save_fitted(fit(1.0), models).name
    store = ModelStore(WorkerSettings(models_dir=str(models)))
    assert store.fitted(rps(name)) is not None
    with pytest.raises(WeightsError, match="fitted on vit_small_patch16_224"):
        store.fitted(rps(name, backbone="dino_vits8"))  # kept for another backbone only


def test_a_renamed_fitted_file_is_refused(models):
    name = save_fitted(fit(1.0), models).name
    shutil.copy(models / name, models / "rps-ffffffffffff.pt")
    store = ModelStore(WorkerSettings(models_dir=str(models)))
    with pytest.raises(WeightsError, match=f"holds the fit {name}: it was renamed"):
        store.fitted(rps("rps-ffffffffffff.pt"))


# --- a worker answers, it does not crash -------------------------------------------------------


def test_a_job_naming_a_file_the_worker_lacks_gets_an_error_result_naming_the_folder(models):
    runtime = WorkerRuntime(WorkerSettings(models_dir=str(models)))
    spec = cad("cad-ffffffffff.pt")
    image = LoadedImage("a.png", np.zeros((8, 8, 3), np.uint8), (8, 8), "sha")
    (result,) = runtime.compute(spec, [Loaded(DiscoveryRequest(spec, "a.png", 7), image)])
    assert not isinstance(result, Exception)
    assert result.task_id == 7 and result.regions == []
    assert result.error and f"ZEROLABEL_MODELS_DIR ({models})" in result.error
