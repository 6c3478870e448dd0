"""Detector training options: checkpoint intervals, the held-out split, masks or boxes only,
values out of range."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from zerolabel.cad.config import MASKS_MIN_FRACTION, MaskCount, choose_masks, parse_duration
from zerolabel.cad.validation import split_image_ids
from zerolabel.cli import detector
from zerolabel.cli.main import main


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("300", 300.0),
        (" 2M ", 120.0),
    ],
)
def test_checkpoint_intervals_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 min", "m", "-5m", "1d", "0", "0s"])
def test_a_malformed_interval_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration|positive"):
        parse_duration(text)


def test_the_command_line_names_a_malformed_interval(tmp_path) -> None:
    coco = tmp_path / "coco.json"
    coco.write_text('{"images": [], "annotations": []}')
    result = CliRunner().invoke(
        main,
        ["train-cad", "--coco", str(coco), "--images", str(tmp_path), "-o", str(tmp_path)]
        + ["--checkpoint-every", "5 minutes"],
    )
    assert result.exit_code == 2
    assert "Invalid value for '--checkpoint-every': '5 minutes' is not a duration" in result.output


def test_the_split_is_seeded_by_image_and_keeps_the_order() -> None:
    ids = list(range(100, 200))
    training, held_out = split_image_ids(ids, 0.1, seed=3)
    assert len(held_out) == 10 and sorted(training + held_out) == ids
    assert held_out == sorted(held_out) and training == sorted(training)
    assert split_image_ids(ids, 0.1, seed=3) == (training, held_out)
    assert split_image_ids(ids, 0.1, seed=4)[1] != held_out


def test_the_default_split_holds_out_a_tenth_only_of_enough_images() -> None:
    assert len(split_image_ids(list(range(128)), None, 0)[1]) == 13
    assert split_image_ids(list(range(49)), None, 0) == (list(range(49)), [])
    assert split_image_ids(list(range(5)), 0.0, 0) == (list(range(5)), [])
    assert len(split_image_ids(list(range(5)), 0.01, 0)[1]) == 1  # at least one image


def test_a_split_without_training_images_is_refused() -> None:
    with pytest.raises(ValueError, match=r"holds out all 2 images"):
        split_image_ids([1, 2], 0.75, 0)


# --- Mask R-CNN or the box-only detector -------------------------------------------------------


def _annotations(masked: int, boxes_only: int, *, crowd: int = 0) -> list[dict]:
    polygon = [[1, 1, 9, 1, 9, 9, 1, 9]]
    anns = [{"bbox": [1, 1, 8, 8], "segmentation": polygon} for _ in range(masked)]
    anns += [{"bbox": [1, 1, 8, 8], "segmentation": []} for _ in range(boxes_only)]
    anns += [{"bbox": [1, 1, 8, 8], "segmentation": polygon, "iscrowd": 1} for _ in range(crowd)]
    return anns


def _mask_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "zerolabel.cad.config"]


@pytest.mark.parametrize(
    ("masked", "boxes_only", "masks"),
    [
        pytest.param(0, 10, False, id="no-masks"),
        pytest.param(6, 529, False, id="few-masks"),
        pytest.param(4, 5, False, id="just-under-half"),
        pytest.param(5, 5, True, id="half"),
        pytest.param(10, 0, True, id="all"),
    ],
)
def test_the_detector_has_masks_when_at_least_half_the_objects_have_one(
    masked: int, boxes_only: int, masks: bool
) -> None:
    assert MASKS_MIN_FRACTION == 0.5
    assert choose_masks(_annotations(masked, boxes_only)) is masks


def test_few_masks_train_the_box_only_detector_with_a_warning_naming_the_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "zerolabel"):
        assert choose_masks(_annotations(6, 529, crowd=40)) is False  # crowds are not trained on
    [warning] = _mask_warnings(caplog)
    assert "only 6 of 535 objects have a mask" in warning and "--masks" in warning


def test_forced_or_partial_masks_warn_about_the_box_shaped_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "zerolabel"):
        assert choose_masks(_annotations(6, 529), forced=True) is True
        assert choose_masks(_annotations(8, 2)) is True
        assert choose_masks(_annotations(6, 529), forced=False) is False
        assert choose_masks(_annotations(10, 0)) is True
    assert _mask_warnings(caplog) == [
        "529 of 535 objects have no mask: Mask R-CNN trains them with their filled box as mask",
        "2 of 10 objects have no mask: Mask R-CNN trains them with their filled box as mask "
        "(--no-masks trains the box-only detector)",
    ]


def test_mask_counts_leave_out_what_training_leaves_out() -> None:
    anns = _annotations(3, 2, crowd=4) + [{"bbox": [1, 1, 0, 5], "segmentation": [[1, 2]]}, 7]
    assert MaskCount.of(anns) == MaskCount(masked=3, objects=5)


def _train_cad(tmp_path: Path, annotations: list[dict], *args: str) -> tuple[Result, list[Any]]:
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [], "annotations": annotations}))
    configs: list[Any] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(detector, "_train_and_export", lambda config, *rest: configs.append(config))
        result = CliRunner().invoke(
            main,
            ["train-cad", "--coco", str(coco), "--images", str(tmp_path), "-o", str(tmp_path)]
            + ["--device", "cpu", *args],
        )
    return result, configs


def test_train_cad_picks_the_box_only_detector_for_few_masks_unless_told(tmp_path: Path) -> None:
    result, [config] = _train_cad(tmp_path, _annotations(6, 529))
    assert result.exit_code == 0, result.output
    assert config.masks is False
    result, [config] = _train_cad(tmp_path, _annotations(6, 529), "--masks")
    assert result.exit_code == 0 and config.masks is True


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--iterations", "0"),
        ("--batch-size", "0"),
        ("--lr", "-0.5"),
        ("--min-size", "-1"),
        ("--max-size", "0"),
    ],
)
def test_train_cad_names_the_option_of_a_value_out_of_range(
    tmp_path: Path, option: str, value: str
) -> None:
    result, configs = _train_cad(tmp_path, [], option, value)
    assert result.exit_code == 2 and configs == []
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: Invalid value for '{option}': {value} is not in the range")
    assert "CadConfig" not in line
