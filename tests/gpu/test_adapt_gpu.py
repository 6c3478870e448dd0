"""``adapt`` on CUDA under fp16 (scaled gradients) and bf16 autocast (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from zerolabel.adapt.config import AdaptConfig
from zerolabel.adapt.data import collect
from zerolabel.adapt.saving import read_checkpoint
from zerolabel.adapt.training import adapt

from tests.unit.test_adapt_data import write_images, write_video

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_short_run_under_autocast_learns_and_keeps_fp32_weights(
    precision: str, dino_checkpoint: Path, tmp_path: Path
) -> None:
    write_images(tmp_path / "media", 4, size=96)
    write_video(tmp_path / "media" / "walk.mp4", 24, size=96)
    inputs = collect([tmp_path / "media"], clip_frames=4, frame_step=3, progress=False)
    config = AdaptConfig(
        backbone="vit_small_patch16_224",
        checkpoint=str(dino_checkpoint),
        model_kwargs={"depth": 2},
        offline=True,
        steps=3,
        batch_size=4,
        out_dim=256,
        global_size=64,
        local_size=32,
        local_crops=4,
        clip_frames=4,
        frame_step=3,
        device="cuda",
        precision=precision,
        checkpoint_seconds=None,
    )
    result = adapt(config, inputs, tmp_path / "out", progress=False)
    assert result is not None and all(torch.isfinite(torch.tensor(result.losses)))
    saved = read_checkpoint(result.checkpoint)
    assert (saved["scaler"] is not None) == (precision == "fp16")
    weights = torch.load(result.weights, weights_only=True)
    base = torch.load(dino_checkpoint, weights_only=True)
    assert weights["blocks.1.mlp.fc1.weight"].dtype == torch.float32
    assert not torch.equal(weights["blocks.1.mlp.fc1.weight"], base["blocks.1.mlp.fc1.weight"])
