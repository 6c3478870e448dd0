"""The files of an adaptation run.

* ``adapt_last.pt`` (:func:`save_checkpoint`): student and teacher (backbones and heads), the
  optimizer, the centre, the fp16 scaler, the step, the config, the inputs' digest and the loss
  of every step: all a run needs to go on exactly where it stopped. Replaced atomically (written
  beside it, flushed, renamed), so a kill during a save keeps the previous one. The teacher's
  backbone is under ``teacher``, as in DINO's and DoRA's training checkpoints, so this file
  also loads as a backbone checkpoint.
* ``adapted-<digest>.pth`` (:func:`export`): the teacher's backbone alone, a plain state dict
  with timm's names, named by the first 12 hex digits of the SHA-256 of its bytes. Its name is
  what a model_version records, so other weights always make another version.
* ``adapted-<digest>.json``: where the weights come from: the backbone, the weights the run
  started from, the inputs' digest, the steps, the loss curve, the command line.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zerolabel.adapt.config import AdaptConfig
from zerolabel.cad.saving import partial_path, write_atomically, write_json_atomically
from zerolabel.checkpoints import read_checkpoint_file
from zerolabel.errors import WeightsError

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "adapt_last.pt"
CHECKPOINT_FORMAT = "zerolabel-adapt-1"
EXPORT_PREFIX = "adapted-"
EXPORT_SUFFIX = ".pth"
CURVE_POINTS = 200
"""The loss curve of the metadata: at most this many points, each the mean of its steps."""


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically with the training state (plus the format marker)."""
    partial = partial_path(path)
    with partial.open("wb") as file:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    logger.debug("saved %s at step %d", path, state.get("step", -1))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint :func:`save_checkpoint` wrote.

    Raises:
        WeightsError: unreadable, or not an adaptation checkpoint.
    """
    loaded = dict(read_checkpoint_file(path, what="adaptation checkpoint"))
    if loaded.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"{path} is not a checkpoint of zerolabel adapt ({CHECKPOINT_FORMAT}): move it away "
            "or choose another --out folder"
        )
    return loaded


def weights_bytes(backbone: nn.Module) -> bytes:
    """The backbone's state dict as ``torch.save`` writes it, tensors copied to the CPU."""
    state = {
        key: value.detach().to("cpu", copy=True).contiguous()
        for key, value in backbone.state_dict().items()
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def export(backbone: nn.Module, out_dir: Path, metadata: Mapping[str, Any]) -> Path:
    """Write ``adapted-<digest>.pth`` and its ``.json`` into ``out_dir``; the weights' path."""
    data = weights_bytes(backbone)
    sha256 = hashlib.sha256(data).hexdigest()
    path = out_dir / f"{EXPORT_PREFIX}{sha256[:12]}{EXPORT_SUFFIX}"
    write_atomically(path, data)
    described = {"file": path.name, "sha256": sha256, **metadata}
    write_json_atomically(path.with_suffix(".json"), described)
    return path


def loss_curve(losses: Sequence[float], points: int = CURVE_POINTS) -> list[dict[str, float]]:
    """At most ``points`` points ``{"step": last step, "loss": mean}`` over equal runs of steps."""
    if not losses:
        return []
    size = max(1, -(-len(losses) // points))  # ceil
    curve = []
    for start in range(0, len(losses), size):
        chunk = losses[start : start + size]
        curve.append({"step": start + len(chunk), "loss": sum(chunk) / len(chunk)})
    return curve


def architecture(backbone: Any) -> dict[str, Any]:
    """The numbers that say which ViT the weights fit."""
    patch = backbone.patch_embed.patch_size
    return {
        "embed_dim": int(backbone.embed_dim),
        "depth": len(backbone.blocks),
        "num_heads": int(backbone.blocks[0].attn.num_heads),
        "patch_size": int(patch[0] if isinstance(patch, tuple | list) else patch),
    }


def versions() -> dict[str, str]:
    """Versions of what computed the weights."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("zerolabel", "timm"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def metadata(
    config: AdaptConfig,
    *,
    backbone_name: str,
    backbone: Any,
    base_weights: str,
    inputs: Mapping[str, Any],
    losses: Sequence[float],
    command: Sequence[str] | None,
    world_size: int,
    elapsed_s: float,
) -> dict[str, Any]:
    """What ``adapted-<digest>.json`` holds besides the file's name and SHA-256."""
    return {
        "format": CHECKPOINT_FORMAT,
        "backbone": config.backbone,
        "timm_name": backbone_name,
        "architecture": architecture(backbone),
        "model_kwargs": dict(config.model_kwargs) if config.model_kwargs else None,
        "base_weights": base_weights,
        "base_checkpoint": os.path.basename(config.checkpoint) if config.checkpoint else None,
        "inputs": dict(inputs),
        "steps": config.steps,
        "final_loss": losses[-1] if losses else None,
        "loss_curve": loss_curve(losses),
        "command": list(command) if command is not None else None,
        "processes": world_size,
        "train_seconds": round(elapsed_s, 1),
        "config": config.to_dict(),
        "versions": versions(),
    }
