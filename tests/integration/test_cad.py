"""The class-agnostic detector: dataset, tiny CPU training runs, resume, detect, self-training.

Training runs are tiny (4 steps on three 120x160 synthetic images, 96 px model input, frozen
backbone, 100 proposals and 64 RoIs per image): they check the plumbing, not the accuracy.
"""

from __future__ import annotations

import json
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from zerolabel.cad import (
    CHECKPOINT_FORMAT,
    CocoDetectionDataset,
    DropLossRoIHeads,
    build_detector,
    detect,
    load_detector,
    read_checkpoint,
    self_training_round,
    train,
)
from zerolabel.contract import Box
from zerolabel.errors import ConfigError, WeightsError
from zerolabel.geometry import rle_encode, rle_to_coco_string
from zerolabel.io.images import ImageLimits, LoadedImage, load_file

from tests.integration.cad_data import IMAGE_HW, tiny_config, write_tiny_coco


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three noisy dark PNGs with bright rectangles, and their COCO file ``coco.json``."""
    return write_tiny_coco(tmp_path_factory.mktemp("cad"))


@pytest.fixture(scope="module")
def mask_run(coco_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Mask R-CNN trained 4 steps; returns its checkpoint."""
    out = tmp_path_factory.mktemp("mask_run")
    return train(
        tiny_config(True, batch_size=1), coco_dir / "coco.json", coco_dir, out, progress=True
    )


@pytest.fixture(scope="module")
def box_run(coco_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A Faster R-CNN run of 4 steps interrupted during step 3, then resumed."""
    out = tmp_path_factory.mktemp("box_run")
    config = tiny_config(False)  # batch 2, a checkpoint every 2 steps
    loads = 0
    real_getitem = CocoDetectionDataset.__getitem__

    def interrupt_at_step_3(self: CocoDetectionDataset, index: int) -> Any:
        nonlocal loads
        loads += 1
        if loads == 5:  # the first image of step 3 (iteration index 2)
            raise KeyboardInterrupt
        return real_getitem(self, index)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CocoDetectionDataset, "__getitem__", interrupt_at_step_3)
        with pytest.raises(KeyboardInterrupt):
            train(config, coco_dir / "coco.json", coco_dir, out, progress=False)
    after_interrupt = read_checkpoint(out / "checkpoint_last.pt")["iteration"]
    path = train(config, coco_dir / "coco.json", coco_dir, out, progress=False)
    return {"path": path, "after_interrupt": after_interrupt, "config": config, "out": out}


def test_dataset_shrinks_images_and_targets_together(coco_dir: Path) -> None:
    dataset = CocoDetectionDataset(coco_dir / "coco.json", coco_dir, 80, masks=True)
    assert len(dataset) == 3
    image, target = dataset[0]
    assert image.shape == (3, 60, 80) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert target["boxes"].tolist() == [[10, 15, 35, 45], [50, 5, 75, 25]]
    assert target["labels"].tolist() == [1, 1]
    masks = target["masks"]
    assert masks.shape == (2, 60, 80) and masks.dtype == torch.uint8
    for mask, (x0, y0, x1, y1) in zip(masks, target["boxes"].int().tolist(), strict=True):
        assert mask[y0:y1, x0:x1].all() and int(mask.sum()) == (x1 - x0) * (y1 - y0)
    _, one = dataset[1]  # uncompressed RLE
    assert int(one["masks"].sum()) == 40 * 30


def test_dataset_keeps_images_without_annotations(coco_dir: Path) -> None:
    image, target = CocoDetectionDataset(coco_dir / "coco.json", coco_dir, 96, masks=True)[2]
    assert image.shape == (3, 72, 96)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 72, 96)


def test_dataset_names_an_image_whose_size_differs_from_the_coco_file(
    coco_dir: Path, tmp_path: Path
) -> None:
    coco = json.loads((coco_dir / "coco.json").read_text())
    coco["images"][0]["width"] = 99
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"two\.png.*99x120"):
        CocoDetectionDataset(tmp_path / "coco.json", coco_dir, 128)[0]


def test_training_with_masks_writes_a_checkpoint_that_detects(
    mask_run: Path, coco_dir: Path
) -> None:
    checkpoint = read_checkpoint(mask_run)
    assert mask_run.name == "checkpoint_last.pt" and checkpoint["format"] == CHECKPOINT_FORMAT
    assert checkpoint["iteration"] == 4 and checkpoint["optimizer"]["state"]
    model, config = load_detector(mask_run, "cpu")
    assert config == tiny_config(True, batch_size=1) and not model.training
    image = load_file(coco_dir / "two.png", ImageLimits())
    detections = detect(model, image, score_threshold=0.0, max_detections=5)
    assert 0 < len(detections) <= 5
    for box, score, mask in detections:
        assert 0 <= box.x0 <= box.x1 <= 160 and 0 <= box.y0 <= box.y1 <= 120
        assert 0.0 <= score <= 1.0
        assert mask is not None and mask.shape == IMAGE_HW and mask.dtype == bool
    scores = [score for _, score, _ in detections]
    assert scores == sorted(scores, reverse=True)


def test_training_resumes_where_it_stopped(box_run: dict[str, Any]) -> None:
    assert box_run["after_interrupt"] == 2
    checkpoint = read_checkpoint(box_run["path"])
    assert checkpoint["iteration"] == 4
    assert checkpoint["config"] == box_run["config"].to_dict()


def test_a_resumed_run_repeats_the_uninterrupted_one(coco_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(False, batch_size=1, iterations=2)
    coco = coco_dir / "coco.json"
    straight = train(config, coco, coco_dir, tmp_path / "straight", progress=False)
    train(replace(config, iterations=1), coco, coco_dir, tmp_path / "resumed", progress=False)
    resumed = train(config, coco, coco_dir, tmp_path / "resumed", progress=False)
    expected, got = read_checkpoint(straight), read_checkpoint(resumed)
    assert got["iteration"] == expected["iteration"] == 2
    for key, value in expected["model"].items():
        assert torch.equal(got["model"][key], value), key


def test_training_refuses_to_resume_with_another_config(
    box_run: dict[str, Any], coco_dir: Path
) -> None:
    other = replace(box_run["config"], masks=True, lr=0.1, iterations=6)
    with pytest.raises(ConfigError, match=r"masks \(False -> True\), lr") as caught:
        train(other, coco_dir / "coco.json", coco_dir, box_run["out"], progress=False)
    assert "iterations" not in str(caught.value)


def test_a_finished_run_is_not_trained_again(box_run: dict[str, Any], coco_dir: Path) -> None:
    before = box_run["path"].stat().st_mtime_ns
    train(box_run["config"], coco_dir / "coco.json", coco_dir, box_run["out"], progress=False)
    assert box_run["path"].stat().st_mtime_ns == before


def test_box_detector_returns_no_masks(box_run: dict[str, Any], coco_dir: Path) -> None:
    model, config = load_detector(box_run["path"], "cpu")
    assert not config.masks
    image = load_file(coco_dir / "one.png", ImageLimits())
    detections = detect(model, image, score_threshold=0.0, max_detections=3)
    assert detections and all(mask is None for _, _, mask in detections)
    assert model.roi_heads.score_thresh == 0.05  # detect() leaves the model's settings alone


class _FixedDetector(nn.Module):
    """Stands in for a detector: returns one fixed output whatever the input."""

    def __init__(self, output: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.roi_heads = types.SimpleNamespace(score_thresh=0.05, detections_per_img=100)
        self.anchor = nn.Parameter(torch.zeros(1))
        self.output = output

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        assert images[0].shape == (3, 30, 40)
        return [self.output]


def test_detect_reports_boxes_and_masks_in_original_pixels() -> None:
    probability = torch.zeros(1, 1, 30, 40)
    probability[..., 10:20, 0:20] = 0.9  # left half of rows 10-19
    output = {
        "boxes": torch.tensor([[0.0, 10.0, 20.0, 20.0]]),
        "scores": torch.tensor([0.8]),
        "masks": probability,
    }
    image = LoadedImage("small", np.zeros((30, 40, 3), np.uint8), (120, 160), "sha")
    [(box, score, mask)] = detect(_FixedDetector(output), image)
    assert box == Box(0.0, 40.0, 80.0, 80.0) and score == pytest.approx(0.8)
    assert mask is not None and mask.shape == (120, 160)
    assert mask[45:75, 5:75].all() and not mask[:, 85:].any() and not mask[:35].any()


@pytest.mark.parametrize(
    "content, match",
    [
        pytest.param(None, "does not exist", id="missing"),
        pytest.param(b"not a checkpoint", "cannot read CAD checkpoint", id="text"),
        pytest.param({"model": {}}, "not a zerolabel CAD checkpoint.*no 'format'", id="other-dict"),
        pytest.param({"format": "zerolabel-cad-0"}, "format 'zerolabel-cad-0'", id="old-format"),
    ],
)
def test_load_detector_rejects_files_that_are_not_cad_checkpoints(
    tmp_path: Path, content: Any, match: str
) -> None:
    path = tmp_path / "model.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(WeightsError, match=match):
        load_detector(path, "cpu")


def test_drop_loss_ignores_proposals_far_from_every_pseudo_box(box_run: dict[str, Any]) -> None:
    model, _ = load_detector(box_run["path"], "cpu")
    heads = model.roi_heads
    assert isinstance(heads, DropLossRoIHeads) and heads.drop_iou == 0.01
    proposals = torch.tensor(
        [[0.0, 0, 50, 50], [10, 10, 50, 50], [40, 40, 60, 60], [90, 90, 99, 99]]
    )
    gt = [torch.tensor([[0.0, 0, 50, 50]]), torch.zeros(0, 4)]
    labels_gt = [torch.ones(1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)]
    _, labels = heads.assign_targets_to_proposals([proposals, proposals], gt, labels_gt)
    assert labels[0].tolist() == [1, 1, 0, -1]  # object, object, background, dropped
    assert labels[1].tolist() == [0, 0, 0, 0]  # an image without pseudo boxes: all background


def _previous_coco() -> dict[str, Any]:
    square = np.zeros((20, 30), bool)
    square[0:10, 0:10] = True
    rle = {"size": [20, 30], "counts": rle_to_coco_string(rle_encode(square))}
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "segmentation": rle},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 10, 8, 8]},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5]},
    ]
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 20, "width": 30} for i in (1, 2)]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1}]}


def test_self_training_keeps_confident_detections_and_labels_they_miss() -> None:
    found = np.zeros((20, 30), bool)
    found[0:10, 0:9] = True  # mask IoU 0.9 with previous label 1
    detections = {
        1: [
            (Box(0, 0, 9, 10), 0.9, found),
            (Box(12, 0, 18, 6), 0.75, None),  # a new object
            (Box(20, 10, 28, 18), 0.5, None),  # below 0.7: dropped, label 2 stays
        ]
    }
    previous = _previous_coco()
    result = self_training_round(previous, detections, score_threshold=0.7, merge_iou=0.5)
    anns = result["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3, 4]
    assert [(a["image_id"], a["bbox"]) for a in anns] == [
        (1, [0, 0, 9, 10]),
        (1, [12, 0, 6, 6]),
        (1, [20, 10, 8, 8]),  # carried over from the previous round
        (2, [0, 0, 5, 5]),  # no detections for image 2: kept
    ]
    assert anns[0]["score"] == 0.9 and anns[0]["area"] == 90 and "segmentation" in anns[0]
    assert result["images"] == previous["images"] and previous["annotations"][1]["id"] == 2


def test_self_training_uses_box_iou_when_a_mask_is_missing() -> None:
    detections = {1: [(Box(20, 10, 28, 17), 0.8, None), (Box(0, 0, 10, 4), 0.8, None)]}
    result = self_training_round(_previous_coco(), detections, merge_iou=0.5)
    bboxes = [a["bbox"] for a in result["annotations"] if a["image_id"] == 1]
    # label 2 (box IoU 0.875) is replaced; label 1 (box IoU 0.4) is carried over
    assert bboxes == [[20, 10, 8, 7], [0, 0, 10, 4], [0, 0, 10, 10]]


def test_self_training_rejects_unknown_images_and_wrong_mask_sizes() -> None:
    with pytest.raises(ValueError, match=r"image ids \[7\]"):
        self_training_round(_previous_coco(), {7: []})
    wrong = (Box(0, 0, 5, 5), 0.9, np.ones((5, 5), bool))
    with pytest.raises(ValueError, match=r"mask is \(5, 5\)"):
        self_training_round(_previous_coco(), {1: [wrong]})


@pytest.fixture(scope="module")
def resnet50_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    from torchvision.models import resnet50

    torch.manual_seed(1)
    return resnet50(weights=None).state_dict()


def test_backbone_checkpoint_is_loaded_into_the_detector(
    resnet50_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(resnet50_state, path)  # includes fc.* and num_batches_tracked: both ignored
    config = tiny_config(False, backbone_checkpoint=str(path), trainable_backbone_layers=None)
    model = build_detector(config)  # 3 trainable layers, as torchvision with pretrained weights
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, resnet50_state["conv1.weight"])
    assert torch.equal(body.layer4[2].bn3.running_var, resnet50_state["layer4.2.bn3.running_var"])
    assert not body.conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad


def test_backbone_checkpoint_with_wrong_keys_names_them(
    resnet50_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    state = dict(resnet50_state)
    state["layer1.0.conv9.weight"] = state.pop("layer1.0.conv1.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"missing keys layer1\.0\.conv1\.weight.*conv9"):
        build_detector(tiny_config(False, backbone_checkpoint=str(path)))
