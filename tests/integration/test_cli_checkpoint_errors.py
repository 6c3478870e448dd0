"""``--checkpoint`` naming a file that holds no weights: one ``Error:`` line that says so.

The tiny random ViT is built, then its weights file is read and refused; torch's advice to load
the file with ``weights_only=False`` never reaches the user.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from zerolabel.cli.main import main

VOC = Path(__file__).resolve().parents[2] / "examples" / "voc2007" / "JPEGImages"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("notes.pth", b"my notes, not weights", id="text"),
        pytest.param("photo.pth", (VOC / "000001.jpg").read_bytes(), id="an-image"),
    ],
)
def test_predict_with_a_checkpoint_that_is_no_weights_file(
    tiny_env: dict[str, str], tmp_path: Path, name: str, content: bytes
) -> None:
    shutil.copy(VOC / "000001.jpg", tmp_path / "a.jpg")
    checkpoint = tmp_path / name
    checkpoint.write_bytes(content)
    env = {**tiny_env, "ZEROLABEL_CHECKPOINT": ""}
    args = ["predict", str(tmp_path / "a.jpg"), "--checkpoint", str(checkpoint)]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out")], env=env)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: cannot read checkpoint {checkpoint}: not a checkpoint, or a damaged one "
        "(expected weights saved with torch.save, e.g. .pth or .pt, or a .safetensors file)"
    ]
    assert "weights_only" not in result.output and "Traceback" not in result.output
