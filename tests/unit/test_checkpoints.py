"""The one reader of weight files refuses what is no weights file, and says so plainly.

torch's own message for such a file advises loading it with ``weights_only=False``, which runs
any code the file holds: that advice must never reach a user.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from zerolabel.checkpoints import read_checkpoint_file
from zerolabel.errors import WeightsError


def _text(path: Path) -> None:
    path.write_text("these are my notes, not weights")


def _plain_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a torch archive")


def _truncated(path: Path) -> None:
    torch.save({"w": torch.ones(64)}, path)
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize(
    ("name", "write"),
    [
        pytest.param("notes.pth", _text, id="text"),
        pytest.param("empty.pt", lambda p: p.write_bytes(b""), id="empty"),
        pytest.param("data.pkl", _plain_pickle, id="plain-pickle"),
        pytest.param("archive.pth", _zip, id="zip"),
        pytest.param("cut.pth", _truncated, id="truncated"),
    ],
)
def test_a_file_that_is_no_checkpoint_is_called_so(tmp_path: Path, name: str, write) -> None:
    path = tmp_path / name
    write(path)
    with pytest.raises(WeightsError) as caught:
        read_checkpoint_file(path, what="checkpoint")
    message = str(caught.value)
    assert message.startswith(f"cannot read checkpoint {path}: not a checkpoint")
    assert "weights_only" not in message and "\n" not in message


def test_a_checkpoint_holding_other_objects_is_named_without_unsafe_advice(
    tmp_path: Path,
) -> None:
    path = tmp_path / "with-numpy.pth"
    torch.save({"weights": torch.ones(2), "stats": np.zeros(3)}, path)
    with pytest.raises(WeightsError) as caught:
        read_checkpoint_file(path, what="CAD checkpoint")
    message = str(caught.value)
    assert message.startswith(f"cannot read CAD checkpoint {path}: not a plain weights file")
    assert "numpy" in message and "state_dict()" in message
    assert "weights_only" not in message and "trust" not in message


def test_a_file_that_is_no_safetensors_is_called_so(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    _text(path)
    with pytest.raises(WeightsError, match=r"model\.safetensors: not a safetensors weights file"):
        read_checkpoint_file(path, what="checkpoint")


def test_a_plain_pickle_shows_no_torch_warning(tmp_path: Path) -> None:
    path = tmp_path / "data.pkl"
    _plain_pickle(path)  # torch warns about the pickle protocol of any non-torch pickle
    with warnings.catch_warnings(record=True) as shown, pytest.raises(WeightsError):
        warnings.simplefilter("always")
        read_checkpoint_file(path, what="checkpoint")
    assert [str(w.message) for w in shown] == []


def test_weights_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.pth"
    torch.save({"w": torch.arange(3.0)}, path)
    assert torch.equal(read_checkpoint_file(path, what="checkpoint")["w"], torch.arange(3.0))
