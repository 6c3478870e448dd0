"""Fitted files: the few tensors a method learned from a dataset, saved next to its users.

Some methods need more than one image's features: representer point selection needs a
foreground direction computed over a dataset, FOUND can use a small trained head. Such a
method's :class:`~zerolabel.methods.MethodInfo` names the ``fitted`` kind it reads; the command
that fits it writes a :class:`Fitted` with :func:`save_fitted`, and workers load it with
:func:`load_fitted` from ``ZEROLABEL_FITTED``.

The file name is ``<kind>-<digest>.pt`` with a digest of the content, and a spec names the file
by that name, so a different fit is a different ``model_version``. A fitted file is bound to the
backbone and weights whose features it was fitted on; loading it for others is refused.

Besides tensors, a fit may hand its method a few plain values (``arguments``: rps's class names,
its picked threshold, its box rule); each kind lists those it may carry (:data:`KINDS`), and a
file with others is refused. A kind's ``revision`` counts changes of what its fits mean: a file
of an earlier revision is refused with what changed, so it is fitted again rather than misread.
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


@dataclass(frozen=True)
class FittedKind:
    """What the fits of one kind may hold, and which revision of their meaning is current."""

    revision: int = 1  # files of another revision are refused
    arguments: frozenset[str] = frozenset()  # plain keyword arguments a fit may pass its method
    changed: str = ""  # what the current revision changed, for the refusal of older files
    command: str = "the command that wrote it"  # how to fit one again


KINDS: dict[str, FittedKind] = {
    "rps": FittedKind(
        revision=2,
        arguments=frozenset({"labels", "picked_threshold", "cells_per_patch"}),
        changed="since revision 2 an rps fit is a direction of the last block's output tokens "
        "after a ReLU (the authors' features), no longer of the attention keys",
        command="zerolabel rps-fit",
    ),
}
"""Kinds whose fits carry arguments or were revised; any other kind is revision 1, tensors only."""


@dataclass(frozen=True, eq=False)  # tensors have no single truth value
class Fitted:
    """What a method learned: tensors passed to it as keyword arguments, and where from."""

    kind: str  # the fitted kind a method registers, e.g. "rps"
    backbone: str  # the backbone whose features it was fitted on
    weights: str  # how model_version names those weights (DiscoverySpec.weights)
    tensors: dict[str, torch.Tensor]  # keyword arguments of the method
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-ready facts: images seen, ...
    arguments: dict[str, Any] = field(default_factory=dict)  # JSON-ready keyword arguments

    @property
    def revision(self) -> int:
        """The revision of its kind this fit was made with (the current one)."""
        return KINDS.get(self.kind, FittedKind()).revision

    def digest(self) -> str:
        """12 hex digits over kind, backbone, weights, tensors, meta and arguments (revision
        and arguments only where they are not those of a plain revision-1 fit, so earlier
        files keep their names)."""
        sha = hashlib.sha256()
        head: dict[str, Any] = {"kind": self.kind, "backbone": self.backbone}
        head |= {"weights": self.weights, "meta": self.meta}
        if self.arguments:
            head["arguments"] = self.arguments
        if self.revision != 1:
            head["revision"] = self.revision
        sha.update(json.dumps(head, sort_keys=True).encode())
        for name in sorted(self.tensors):
            tensor = self.tensors[name].detach().to("cpu", torch.float32).contiguous()
            sha.update(name.encode())
            sha.update(str(tuple(tensor.shape)).encode())
            sha.update(tensor.numpy().tobytes())
        return sha.hexdigest()[:12]

    def file_name(self) -> str:
        return f"{self.kind}-{self.digest()}.pt"

    def method_arguments(self, device: torch.device | str) -> dict[str, Any]:
        """The keyword arguments its method gets: the tensors on ``device``, and the arguments."""
        moved: dict[str, Any] = {name: t.to(device) for name, t in self.tensors.items()}
        return moved | self.arguments


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
        "revision": fitted.revision,
        "arguments": json.loads(json.dumps(fitted.arguments)),
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
        WeightsError: a missing or unreadable file, one of another format or kind, of an
            earlier revision of its kind (the message says what changed), with arguments its
            kind does not take, or one fitted on other backbone weights (the message names both).
    """
    data = read_checkpoint_file(path, what="fitted file")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise WeightsError(f"fitted file {path} is not a zerolabel fitted file (version {VERSION})")
    tensors = data.get("tensors")
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise WeightsError(f"fitted file {path} holds no tensors")
    found_kind = str(data.get("kind"))
    if found_kind != kind:
        raise WeightsError(f"fitted file {path} holds a {found_kind!r} fit, not a {kind!r} one")
    _check_revision(path, kind, data.get("revision", 1))
    fitted = Fitted(
        kind=found_kind,
        backbone=str(data.get("backbone")),
        weights=str(data.get("weights")),
        tensors=dict(tensors),
        meta=dict(data.get("meta") or {}),
        arguments=_arguments(path, kind, data.get("arguments") or {}),
    )
    if (fitted.backbone, fitted.weights) != (backbone, weights):
        raise WeightsError(
            f"fitted file {path} was fitted on {fitted.backbone} with weights "
            f"{fitted.weights!r}, but this process runs {backbone} with weights {weights!r}: "
            "fit it again with the same ZEROLABEL_BACKBONE and weights"
        )
    return fitted


def _check_revision(path: str | Path, kind: str, revision: object) -> None:
    """Refuse a fit of another revision of ``kind`` than the current one."""
    current = KINDS.get(kind, FittedKind())
    if revision != current.revision:
        raise WeightsError(
            f"fitted file {path} is a {kind!r} fit of revision {revision!r}, this zerolabel "
            f"reads revision {current.revision} ({current.changed or 'another format'}): fit "
            f"it again with {current.command}"
        )


def _arguments(path: str | Path, kind: str, arguments: object) -> dict[str, Any]:
    """The plain arguments of a fit, when its kind takes them all (their values are the
    method's to check)."""
    allowed = KINDS.get(kind, FittedKind()).arguments
    if not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments):
        raise WeightsError(f"fitted file {path} holds arguments that are not a name -> value map")
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        raise WeightsError(
            f"fitted file {path} passes {', '.join(unknown)} to its method, which a {kind!r} "
            f"fit may not (allowed: {', '.join(sorted(allowed)) or 'none'})"
        )
    return dict(arguments)
