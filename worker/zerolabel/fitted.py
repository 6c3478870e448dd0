"""Fitted files: the few tensors a method learned from a dataset, saved next to its users.

Some methods need more than one image's features: representer point selection needs a
foreground direction computed over a dataset, FOUND can use a small trained head. Such a
method's :class:`~zerolabel.methods.MethodInfo` names the ``fitted`` kind it reads; the command
that fits it writes a :class:`Fitted` with :func:`save_fitted`, and workers load it with
:func:`load_fitted` from ``ZEROLABEL_FITTED``.

The file name is ``<kind>-<digest>.pt`` with a digest of the content, and a spec names the file
by that name, so a different fit is a different ``model_version``. A fitted file is bound to the
backbone and weights whose features it was fitted on; loading it for others is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zerolabel.checkpoints import read_checkpoint_file
from zerolabel.errors import WeightsError

FORMAT = "zerolabel-fitted"
VERSION = 1


@dataclass(frozen=True, eq=False)  # tensors have no single truth value
class Fitted:
    """What a method learned: tensors passed to it as keyword arguments, and where from."""

    kind: str  # the fitted kind a method registers, e.g. "rps"
    backbone: str  # the backbone whose features it was fitted on
    weights: str  # how model_version names those weights (DiscoverySpec.weights)
    tensors: dict[str, torch.Tensor]  # keyword arguments of the method
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-ready facts: images seen, ...

    def digest(self) -> str:
        """12 hex digits over kind, backbone, weights, tensors and meta."""
        sha = hashlib.sha256()
        head = {"kind": self.kind, "backbone": self.backbone, "weights": self.weights}
        sha.update(json.dumps({**head, "meta": self.meta}, sort_keys=True).encode())
        for name in sorted(self.tensors):
            tensor = self.tensors[name].detach().to("cpu", torch.float32).contiguous()
            sha.update(name.encode())
            sha.update(str(tuple(tensor.shape)).encode())
            sha.update(tensor.numpy().tobytes())
        return sha.hexdigest()[:12]

    def file_name(self) -> str:
        return f"{self.kind}-{self.digest()}.pt"


def save_fitted(fitted: Fitted, folder: str | Path) -> Path:
    """Write ``fitted`` into ``folder`` as ``<kind>-<digest>.pt`` (atomically); its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / fitted.file_name()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": fitted.kind,
        "backbone": fitted.backbone,
        "weights": fitted.weights,
        "tensors": {k: v.detach().to("cpu", torch.float32) for k, v in fitted.tensors.items()},
        "meta": json.loads(json.dumps(fitted.meta)),
    }
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def load_fitted(path: str | Path, *, kind: str, backbone: str, weights: str) -> Fitted:
    """The fitted file at ``path``, checked against what the caller runs.

    Raises:
        WeightsError: a missing or unreadable file, one of another format or kind, or one fitted
            on other backbone weights (the message names both).
    """
    data = read_checkpoint_file(path, what="fitted file")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise WeightsError(f"fitted file {path} is not a zerolabel fitted file (version {VERSION})")
    tensors = data.get("tensors")
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise WeightsError(f"fitted file {path} holds no tensors")
    fitted = Fitted(
        kind=str(data.get("kind")),
        backbone=str(data.get("backbone")),
        weights=str(data.get("weights")),
        tensors=dict(tensors),
        meta=dict(data.get("meta") or {}),
    )
    if fitted.kind != kind:
        raise WeightsError(f"fitted file {path} holds a {fitted.kind!r} fit, not a {kind!r} one")
    if (fitted.backbone, fitted.weights) != (backbone, weights):
        raise WeightsError(
            f"fitted file {path} was fitted on {fitted.backbone} with weights "
            f"{fitted.weights!r}, but this process runs {backbone} with weights {weights!r}: "
            "fit it again with the same ZEROLABEL_BACKBONE and weights"
        )
    return fitted
