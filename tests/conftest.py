"""Shared fixtures: seeded random checkpoints in the official DINO layout, example images."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def dino_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A depth-2 ViT-S/16 state dict in DINO's official layout, seeded random weights."""
    import torch

    from tests.reference_dino import ReferenceDino

    path = tmp_path_factory.mktemp("weights") / "dino_vits16_depth2.pth"
    torch.save(ReferenceDino(depth=2).randomize(seed=0).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_env(dino_checkpoint: Path) -> dict[str, str]:
    """Settings for a depth-2 ViT-S/16 with seeded random weights, on CPU, never downloading."""
    return {
        "ZEROLABEL_BACKBONE": "vit_small_patch16_224",
        "ZEROLABEL_BACKBONE_KWARGS": '{"depth": 2}',
        "ZEROLABEL_CHECKPOINT": str(dino_checkpoint),
        "ZEROLABEL_OFFLINE": "1",
        "ZEROLABEL_DEVICE": "cpu",
    }
