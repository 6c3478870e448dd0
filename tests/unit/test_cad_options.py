"""Detector training options: checkpoint intervals and the held-out split."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from zerolabel.cad.config import parse_duration
from zerolabel.cad.validation import split_image_ids
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
