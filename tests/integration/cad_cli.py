"""``zerolabel`` in a subprocess, for the interrupt tests: deterministic, and optionally held.

``python -m tests.integration.cad_cli [--hold CHECKPOINT RELEASE] train-cad ...`` runs the real
command line with torch on one thread and deterministic algorithms, so that separate processes
compute identical weights. With ``--hold``, loading an image waits while CHECKPOINT exists and
RELEASE does not: the test sends its signal while training is held inside a known iteration,
then releases it, so the iteration the run stops after never depends on timing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from zerolabel.cad.data import CocoDetectionDataset
from zerolabel.cli.main import main


def _hold(checkpoint: Path, release: Path) -> None:
    load = CocoDetectionDataset.__getitem__

    def held(self: CocoDetectionDataset, index: int) -> Any:
        while checkpoint.exists() and not release.exists():
            time.sleep(0.02)
        return load(self, index)

    CocoDetectionDataset.__getitem__ = held  # type: ignore[method-assign]


def run(argv: list[str]) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if argv[:1] == ["--hold"]:
        _hold(Path(argv[1]), Path(argv[2]))
        argv = argv[3:]
    main(argv, prog_name="zerolabel")


if __name__ == "__main__":
    run(sys.argv[1:])
