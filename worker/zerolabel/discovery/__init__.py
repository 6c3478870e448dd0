"""Unsupervised object discovery on ViT patch features, in patch-grid space.

Every method is a pure function ``method(keys, grid_hw, **params) -> list[ObjectMask]``:

- ``keys``: [N, D] last-block attention keys of the N = h * w patches, row-major
  (patch ``p`` is at row ``p // w``, column ``p % w``), on any device.
- ``grid_hw``: (h, w) of the patch grid.

Methods never see pixels, image sizes or files; :mod:`zerolabel.geometry` maps their patch masks
back to the image. "Nothing found" is the empty list. Their parameters, defaults and bounds are
registered in :mod:`zerolabel.methods`, which requests are checked against before they run.
"""

from __future__ import annotations

from zerolabel.discovery import (
    dinoseg,
    dss,
    found,
    lost,
    maskcut,
    promerge,
    rps,
    tokencut,
)
from zerolabel.discovery.objects import DiscoveryMethod, ObjectMask

FUNCTIONS: dict[str, DiscoveryMethod] = {
    "lost": lost.lost,
    "tokencut": tokencut.tokencut,
    "maskcut": maskcut.maskcut,
    "found": found.found,
    "rps": rps.rps,
    "dinoseg": dinoseg.dinoseg,
    "dss": dss.dss,
    "promerge": promerge.promerge,
}
"""The function of each feature method registered in :data:`zerolabel.methods.METHODS`, by
name (the method modules are bound as modules: ``zerolabel.discovery.lost`` is the module,
``zerolabel.discovery.lost.lost`` the function)."""

__all__ = ["FUNCTIONS", "DiscoveryMethod", "ObjectMask"]
