"""The student learns: against a frozen teacher at a fixed temperature and centre (targets that
do not move), the distillation loss of later steps is below that of the first ones.

(Under DINO's schedules the loss is no measure of progress: the teacher's temperature rises and
its targets follow the student, so the same network pays a larger loss later.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from zerolabel.adapt.data import collect
from zerolabel.adapt.training import adapt

from tests.integration.test_adapt_resume import CONFIG
from tests.unit.test_adapt_data import write_images

pytestmark = pytest.mark.integration


def test_the_student_learns_the_targets_of_a_frozen_teacher(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", 8, size=48)
    inputs = collect([tmp_path / "photos"], clip_frames=3, frame_step=2, progress=False)
    config = dataclasses.replace(
        CONFIG,
        steps=40,
        batch_size=4,
        lr=0.05,
        momentum=1.0,  # the teacher never moves
        center_momentum=1.0,  # nor does the centre
        teacher_temp=0.04,  # nor its temperature
        warmup_fraction=0.0,
        freeze_last_layer_fraction=0.0,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = adapt(config, inputs, tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result is not None
    first, last = result.losses[:10], result.losses[-10:]
    assert sum(last) / 10 < sum(first) / 10 - 0.05, result.losses
