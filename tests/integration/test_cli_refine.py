"""``zerolabel predict -m maskcut``: refined masks leave the patch grid, --no-refine keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools.coco import COCO
from zerolabel.cli.main import main

from tests.patch_grid import is_patch_aligned, maskcut_frame


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    """A small photo: a bright textured rectangle (edges off the 16 px grid) on dark texture."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 60, (96, 128, 3)).astype(np.uint8)
    pixels[21:70, 37:99] = rng.integers(190, 250, (49, 62, 3))
    path = tmp_path / "scene.png"
    Image.fromarray(pixels).save(path)
    return path


def masks(tiny_env: dict[str, str], image: Path, out: Path, *flags: str) -> list[np.ndarray]:
    args = ["predict", str(image), "-m", "maskcut", "-o", str(out), *flags]
    result = CliRunner().invoke(main, args, env=tiny_env)
    assert result.exit_code == 0, result.output
    coco = COCO()
    coco.dataset = json.loads((out / "coco.json").read_text())
    coco.createIndex()
    found = [coco.annToMask(ann).astype(bool) for ann in coco.anns.values()]
    assert found, "the rectangle is found"
    return found


def test_refined_masks_leave_the_patch_grid_and_no_refine_keeps_it(tiny_env, scene, tmp_path):
    frame = maskcut_frame((96, 128))
    refined = masks(tiny_env, scene, tmp_path / "refined")
    assert not any(is_patch_aligned(mask, frame) for mask in refined)
    coarse = masks(tiny_env, scene, tmp_path / "coarse", "--no-refine")
    assert all(is_patch_aligned(mask, frame) for mask in coarse)
    tasks = [json.loads((tmp_path / d / "tasks.json").read_text()) for d in ("refined", "coarse")]
    versions = [t[0]["predictions"][0]["model_version"] for t in tasks]
    assert versions[0] != versions[1]  # Label Studio keeps the two apart
