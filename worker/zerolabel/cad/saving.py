"""The detector's files: one full training checkpoint, and weights-only exports for serving.

* ``checkpoint_last.pt`` (:func:`save_checkpoint`): model, optimizer, iteration, config and
  the ``format`` marker; everything a run needs to resume. It is replaced atomically (written
  to ``checkpoint_last.pt.partial``, flushed to disk, then renamed), so a kill during a save
  leaves the previous checkpoint intact; only one full checkpoint is ever kept.
* ``cad-<digest>.pt`` (:func:`export_weights`): model, config, iteration and marker, no
  optimizer (about half the size), named by the digest of its bytes so that every distinct
  detector is a distinct ``model_version``. Workers load it with
  :func:`zerolabel.cad.model.load_detector`.

The learning rate is a function of the iteration and each step draws its images and random
numbers from ``seed`` and the iteration (:mod:`zerolabel.cad.training`), so the iteration is
all the checkpoint needs to continue exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zerolabel.cad.config import CadConfig
from zerolabel.cad.model import CHECKPOINT_FORMAT, read_checkpoint

logger = logging.getLogger(__name__)

EXPORT_PREFIX = "cad-"
"""Exports are ``cad-<first 10 hex digits of their SHA-256>.pt``."""


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    config: CadConfig,
) -> None:
    """Replace ``path`` atomically with the full training state at ``iteration``."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "iteration": iteration,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    partial = partial_path(path)
    with partial.open("wb") as file:
        torch.save(checkpoint, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    logger.debug("saved %s at iteration %d", path, iteration)


def partial_path(path: Path) -> Path:
    """Where :func:`save_checkpoint` writes before renaming (left behind only by a kill)."""
    return path.with_name(path.name + ".partial")


def export_weights(checkpoint_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the weights-only ``cad-<digest>.pt`` of a checkpoint and return its path.

    Args:
        checkpoint_path: a ``checkpoint_last.pt`` (or an earlier export).
        out_dir: where to write; by default the checkpoint's folder.

    Raises:
        WeightsError: the checkpoint is not a zerolabel CAD checkpoint.
    """
    checkpoint = read_checkpoint(checkpoint_path)
    weights = {key: checkpoint[key] for key in ("format", "iteration", "config", "model")}
    buffer = io.BytesIO()  # in memory: the bytes (and so the name) do not depend on a file name
    torch.save(weights, buffer)
    data = buffer.getvalue()
    folder = Path(out_dir) if out_dir is not None else Path(checkpoint_path).parent
    path = folder / f"{EXPORT_PREFIX}{hashlib.sha256(data).hexdigest()[:10]}.pt"
    write_atomically(path, data)
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through a temporary file and a rename."""
    partial = partial_path(path)
    with partial.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def write_json_atomically(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as indented JSON (NaN written as null)."""
    write_atomically(path, json.dumps(_no_nan(data), indent=1).encode("utf-8"))


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Mapping):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_no_nan(item) for item in value]
    return value
