"""``zerolabel eval --method ...``: methods run in process on ground-truth images, a row each."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from zerolabel.cli.main import main

VOC = Path(__file__).resolve().parents[2] / "examples" / "voc2007"
STEMS = ("000001", "000004", "000032")


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """Three VOC photos with their annotations, and one photo without any."""
    for sub in ("Annotations", "JPEGImages"):
        (tmp_path / sub).mkdir()
    for stem in STEMS:
        shutil.copy(VOC / "Annotations" / f"{stem}.xml", tmp_path / "Annotations")
        shutil.copy(VOC / "JPEGImages" / f"{stem}.jpg", tmp_path / "JPEGImages")
    shutil.copy(VOC / "JPEGImages" / "000033.jpg", tmp_path / "JPEGImages")  # no ground truth
    return tmp_path


@pytest.fixture
def env(tiny_env: dict[str, str]) -> dict[str, str]:
    return {**tiny_env, "ZEROLABEL_MAX_SIDE": "224"}  # small inputs: a fast test


def _eval(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(main, ["eval", *args], env=env)


def _row(output: str, method: str) -> list[str]:
    lines = [line.split() for line in output.splitlines() if line.split()[:1] == [method]]
    assert len(lines) == 1, output
    return lines[0]


def test_one_row_per_method_with_region_and_task_spearman_columns(voc, env):
    result = _eval(
        ["--gt", str(voc / "Annotations"), "--images", str(voc / "JPEGImages")]
        + ["--method", "lost", "--method", "maskcut"],
        env,
    )
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split()
    assert header[0] == "method" and header[-4:] == ["region", "rho", "task", "rho"]
    assert "CorLoc" in header
    for method in ("lost", "maskcut"):
        row = _row(result.output, method)
        assert len(row) == len(header) - 6  # "CorLoc %", "region rho", ... are two words each
        assert row[1:3] == [str(len(STEMS)), "0"]  # images with ground truth; none failed
        assert all(re.fullmatch(r"[+-]\d\.\d\d|n/a", cell) for cell in row[-2:])
    assert int(_row(result.output, "lost")[-3]) <= len(STEMS)  # LOST: one region per image


def test_a_method_row_equals_evaluating_its_predict_output(voc, env, tmp_path):
    out = tmp_path / "out"
    images = [str(voc / "JPEGImages" / f"{stem}.jpg") for stem in STEMS]
    predicted = CliRunner().invoke(
        main, ["predict", *images, "-m", "lost", "-o", str(out)], env=env
    )
    assert predicted.exit_code == 0, predicted.output
    table = _eval([str(out / "coco.json"), "--gt", str(voc / "Annotations")], env).output
    values = dict(re.findall(r"^(\S.*?)\s{2,}(\S+)$", table, flags=re.MULTILINE))
    gt_args = ["--gt", str(voc / "Annotations"), "--images", str(voc / "JPEGImages")]
    row = _row(_eval([*gt_args, "--method", "lost"], env).output, "lost")
    expected = [values[k] for k in ("CorLoc (%)", "AP50 (%)", "AP (%)", "AR100 (%)")]
    assert row[3:7] == expected
    assert row[7:] == [
        values["regions scored"],
        values["Spearman (score, IoU)"],
        values["Spearman (task score, quality)"],
    ]


def test_method_mode_needs_images_and_ground_truth_that_matches(voc, env, tmp_path):
    no_images = _eval(["--gt", str(voc / "Annotations"), "--method", "lost"], env)
    assert no_images.exit_code == 2 and "--method needs --images" in no_images.output
    no_gt = _eval(["--images", str(voc / "JPEGImages"), "--method", "lost"], env)
    assert no_gt.exit_code == 2 and "--method with --gt and --images" in no_gt.output
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(VOC / "JPEGImages" / "000033.jpg", other / "elsewhere.jpg")
    unmatched = _eval(["--gt", str(voc / "Annotations"), "--images", str(other), "-m", "lost"], env)
    assert unmatched.exit_code == 1
    assert unmatched.output.startswith("Error: ") and "has ground truth" in unmatched.output
