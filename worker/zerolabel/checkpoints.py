"""Reading weight files and fitting them into modules: one reader for the ViT and the detector.

Files are read without executing code: torch pickles with ``weights_only=True`` (DINO training
checkpoints' ``argparse.Namespace`` is allowed) and safetensors files by their suffix. A file
that is missing, unreadable, not a mapping, or whose keys do not fit the module fails with a
:class:`~zerolabel.errors.WeightsError` that names the file and the cause. A file that is no
weights file at all is called so; torch's own advice to load it without ``weights_only`` (which
would run any code the file holds) never reaches the user.
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from zerolabel.errors import WeightsError

_WRAPPER_KEYS = ("teacher", "state_dict", "model")  # DINO/DoRA training checkpoints, others
_PREFIXES = ("module.", "backbone.", "_orig_mod.")  # DDP, DINO MultiCropWrapper, torch.compile
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")  # torch's weights_only refusal


def read_checkpoint_file(path: str | Path, *, what: str, hint: str = "") -> Mapping[str, Any]:
    """The mapping a checkpoint file holds, with tensors on the CPU.

    Args:
        path: a torch file (``.pth``, ``.pt``, ``.bin``...) or a ``.safetensors`` file.
        what: how messages name the file, e.g. "checkpoint" or "CAD checkpoint".
        hint: appended to the message when the file does not exist (how to provide one).

    Raises:
        WeightsError: the file does not exist, cannot be read, is no weights file, or holds no
            mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} {path} does not exist" + (f". {hint}" if hint else ""))
    try:
        loaded = _load(path)
    except OSError as exc:
        raise WeightsError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # anything else the readers refuse: not a weights file
        raise WeightsError(f"cannot read {what} {path}: {_not_weights(path, exc)}") from None
    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{what} {path} holds a {type(loaded).__name__}, not a state dict")
    return loaded


def _load(path: Path) -> object:
    """What the file holds, read without running code from it."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with warnings.catch_warnings():
        # Any pickle that is no torch file makes torch warn about its protocol first.
        warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
        # DINO training checkpoints pickle their argparse.Namespace next to the weights.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)


def _not_weights(path: Path, exc: Exception) -> str:
    """Why a file that could be opened is no weights file zerolabel loads (one clause)."""
    if path.suffix == ".safetensors":
        return "not a safetensors weights file"
    unsafe = _UNSAFE_GLOBAL.search(str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
    if unsafe is not None:
        return (
            f"not a plain weights file: it holds Python objects ({unsafe[1]}) besides tensors, "
            "which zerolabel never loads; save the model's state_dict() alone"
        )
    return (
        "not a checkpoint, or a damaged one (expected weights saved with torch.save, e.g. .pth "
        "or .pt, or a .safetensors file)"
    )


def unwrap_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Find the backbone weights inside common checkpoint wrappers and strip their prefixes.

    ``{"teacher": {...}}`` (DINO/DoRA training checkpoints), ``{"state_dict": ...}``,
    ``{"model": ...}``; prefixes ``module.``, ``backbone.``; projection-head keys are dropped.
    """
    for key in _WRAPPER_KEYS:
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    weights: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in _PREFIXES:
            key = key.removeprefix(prefix)
        if key.startswith("head."):
            continue  # DINO projection head: not part of the backbone
        weights[key] = value
    return weights


def load_fitting(module: torch.nn.Module, state: Mapping[str, Any], what: str) -> None:
    """Load ``state`` into ``module``, refusing any missing, unexpected or misshapen key.

    Raises:
        WeightsError: ``what`` followed by the keys (or shapes) that do not fit.
    """
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"{what}: {exc}") from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{what}: missing keys {_few(result.missing_keys)}, unexpected keys "
            f"{_few(result.unexpected_keys)}"
        )


def _few(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
