"""Ground-truth readers for evaluation: PASCAL VOC XML, COCO JSON and YOLO txt labels.

Every reader returns the same structure, a :data:`GroundTruth` dict from the image's file stem
(``000001`` for ``000001.jpg``) to a :class:`GtImage`. Boxes are :class:`~zerolabel.contract.Box`
in original-image pixels with ``x1``/``y1`` exclusive, the frame our predictions use, so IoU is
computed without the old ``+1`` convention.

Predictions are matched to ground truth by stem (:func:`match_ground_truth`): the same stem, else
the same name once Label Studio's upload prefix is set aside on either side. Label Studio stores
an upload ``000000000009.jpg`` as ``55b99580-000000000009.jpg``, and its exports (YOLO label
files, COCO ``file_name``) carry that name, while the photos on disk do not. Images that match no
ground truth are counted in a warning (:func:`keyed_by_ground_truth`), never dropped silently.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from zerolabel.contract import Box
from zerolabel.io.images import IMAGE_SUFFIXES, image_hw

logger = logging.getLogger(__name__)

YOLO_CLASSES_FILE = "classes.txt"
"""Darknet-style class-name list that may sit among YOLO label files (one name a line)."""

UPLOAD_PREFIX = re.compile(r"[0-9a-f]{8}-")
"""What Label Studio puts before the name of an uploaded file (8 hex digits of a UUID, a dash)."""


T = TypeVar("T")


@dataclass(frozen=True)
class GtImage:
    """Ground truth of one image: boxes and their class names, in the same order."""

    file_name: str  # as the annotation names the image (may include folders)
    image_hw: tuple[int, int]  # original size, after EXIF orientation
    boxes: list[Box]
    labels: list[str]

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.labels):
            raise ValueError(
                f"{self.file_name}: {len(self.boxes)} boxes but {len(self.labels)} labels"
            )


GroundTruth = dict[str, GtImage]
"""File stem -> ground truth of that image."""


def find_image(images_dir: Path, stem: str) -> Path | None:
    """The image file ``images_dir/stem.<suffix>`` for a known image suffix, or None."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (images_dir / f"{stem}{suffix}", images_dir / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def without_upload_prefix(stem: str) -> str:
    """``stem`` without Label Studio's upload prefix: ``55b99580-000009`` -> ``000009``."""
    prefix = UPLOAD_PREFIX.match(stem)
    return stem[prefix.end() :] if prefix is not None and prefix.end() < len(stem) else stem


def match_ground_truth(stems: Iterable[str], gt: Mapping[str, Any]) -> dict[str, str]:
    """Image stem -> the ground-truth stem it describes; stems that match none are left out.

    A stem matches the same ground-truth stem; failing that, the one ground-truth stem equal to
    it once Label Studio's upload prefix is set aside on both sides (two candidates: no match).
    Each ground-truth image is matched once, exact matches first.
    """
    names = list(dict.fromkeys(stems))
    matched = {stem: stem for stem in names if stem in gt}
    by_plain_name: dict[str, list[str]] = defaultdict(list)
    for gt_stem in gt:
        by_plain_name[without_upload_prefix(gt_stem)].append(gt_stem)
    taken = set(matched.values())
    for stem in names:
        candidates = by_plain_name.get(without_upload_prefix(stem), [])
        if stem not in matched and len(candidates) == 1 and candidates[0] not in taken:
            matched[stem] = candidates[0]
            taken.add(candidates[0])
    return matched


def keyed_by_ground_truth(found: Mapping[str, T], gt: Mapping[str, Any]) -> dict[str, T]:
    """``found`` (by image stem) keyed by the ground-truth stems its images match.

    Images that match no ground truth are left out, with a warning that counts them.
    """
    matched = match_ground_truth(found, gt)
    warn_unmatched([stem for stem in found if stem not in matched], len(found), "predicted images")
    return {matched[stem]: value for stem, value in found.items() if stem in matched}


def warn_unmatched(unmatched: Sequence[str], total: int, what: str) -> None:
    """Warn that ``len(unmatched)`` of ``total`` images (``what``, e.g. "predicted images")
    have no ground truth, naming the first few."""
    if not unmatched:
        return
    shown = ", ".join(repr(stem) for stem in unmatched[:3]) + (
        ", ..." if len(unmatched) > 3 else ""
    )
    logger.warning(
        "%d of %d %s match no ground-truth image and are not scored (matched by file name "
        "without suffix, Label Studio's upload prefix set aside): %s",
        len(unmatched),
        total,
        what,
        shown,
    )


def read_voc(folder: str | Path, split: str | None = None) -> GroundTruth:
    """Read PASCAL VOC XML annotations.

    VOC stores ``xmin..xmax`` as 1-based, *inclusive* pixel indices: a box covering the first
    pixel column only has ``xmin = xmax = 1``. LOST's protocol shifts each box to
    ``[xmin - 1, ymin - 1, xmax, ymax]``: the 0-based first pixel and the 0-based exclusive end,
    which is exactly our :class:`Box` convention, so IoU without ``+1`` counts whole pixels.
    All objects are kept, ``difficult`` and ``truncated`` ones included, as LOST counts them.

    Args:
        folder: a folder of ``*.xml`` files, or a VOCdevkit year folder holding ``Annotations/``
            (and ``JPEGImages/``, ``ImageSets/Main/``).
        split: with a VOCdevkit folder, read only the ids listed in
            ``ImageSets/Main/<split>.txt`` (``"trainval"`` for the LOST VOC07/VOC12 setting).

    Returns:
        Ground truth keyed by the annotation file's stem (the VOC image id).

    Raises:
        ValueError: the folder holds no XML annotations, or a file is malformed.
    """
    root = Path(folder)
    ann_dir = root / "Annotations" if (root / "Annotations").is_dir() else root
    if not ann_dir.is_dir():
        raise ValueError(f"{root}: expected a folder of VOC .xml files or a VOCdevkit folder")
    xml_paths = _voc_xml_paths(root, ann_dir, split)
    images_dir = ann_dir.parent / "JPEGImages"
    return {p.stem: _read_voc_file(p, images_dir) for p in xml_paths}


def _voc_xml_paths(root: Path, ann_dir: Path, split: str | None) -> list[Path]:
    """The annotation files to read, optionally restricted to a VOC ImageSets split."""
    if split is None:
        paths = sorted(ann_dir.glob("*.xml"))
        if not paths:
            raise ValueError(f"{ann_dir}: expected VOC .xml annotation files, found none")
        return paths
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise ValueError(f"{root}: split {split!r} needs {split_file}, which does not exist")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    paths = [ann_dir / f"{image_id}.xml" for image_id in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{split_file}: {len(missing)} listed ids have no XML, e.g. {missing[0]}")
    return paths


def _read_voc_file(path: Path, images_dir: Path) -> GtImage:
    """One VOC XML file -> GtImage, boxes shifted to ``[xmin - 1, ymin - 1, xmax, ymax]``."""
    try:
        ann = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: not a valid VOC XML file ({err})") from err
    file_name = (ann.findtext("filename") or f"{path.stem}.jpg").strip()
    boxes: list[Box] = []
    labels: list[str] = []
    for obj in ann.iter("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"{path}: an <object> has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (
                float(bndbox.findtext(tag) or "") for tag in ("xmin", "ymin", "xmax", "ymax")
            )
        except ValueError as err:
            raise ValueError(f"{path}: <bndbox> needs numeric xmin/ymin/xmax/ymax") from err
        boxes.append(Box(xmin - 1.0, ymin - 1.0, xmax, ymax))
        labels.append((obj.findtext("name") or "").strip())
    return GtImage(file_name, _voc_size(ann, path, images_dir), boxes, labels)


def _voc_size(ann: ET.Element, path: Path, images_dir: Path) -> tuple[int, int]:
    """Image size from ``<size>``; from the image file when the XML gives none (or zeros)."""
    try:
        height = int(float(ann.findtext("size/height") or 0))
        width = int(float(ann.findtext("size/width") or 0))
    except ValueError:
        height = width = 0
    if height > 0 and width > 0:
        return height, width
    image = find_image(images_dir, path.stem) if images_dir.is_dir() else None
    if image is None:
        raise ValueError(f"{path}: no <size> and no image {path.stem}.* in {images_dir}")
    return image_hw(image)


def read_coco(json_path: str | Path) -> GroundTruth:
    """Read a COCO instances JSON file.

    ``bbox`` ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``. Crowd annotations
    (``iscrowd = 1``) are removed, as in LOST's COCO20k protocol; their images stay.

    Args:
        json_path: the instances file (``images``, ``annotations``, ``categories``).

    Returns:
        Ground truth keyed by the stem of each image's ``file_name``.

    Raises:
        ValueError: the file is not COCO instances JSON, two images share a stem, or an
            annotation names an unknown image.
    """
    path = Path(json_path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected COCO instances JSON with an 'images' list")
    names = {c["id"]: str(c.get("name", c["id"])) for c in data.get("categories", [])}
    per_image: dict[Any, tuple[list[Box], list[str]]] = {
        im["id"]: ([], []) for im in data["images"]
    }
    for ann in data.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        if ann["image_id"] not in per_image:
            raise ValueError(f"{path}: annotation {ann.get('id')} names unknown image_id")
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes, labels = per_image[ann["image_id"]]
        boxes.append(Box(x, y, x + w, y + h))
        labels.append(names.get(ann.get("category_id"), str(ann.get("category_id"))))
    gt: GroundTruth = {}
    for im in data["images"]:
        stem = unique_stem(gt, im["file_name"], path)
        boxes, labels = per_image[im["id"]]
        gt[stem] = GtImage(im["file_name"], (int(im["height"]), int(im["width"])), boxes, labels)
    return gt


def load_json(path: Path) -> Any:
    """Parse a JSON file, turning every failure into a ValueError that names the file."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read JSON ({err})") from err


def unique_stem(seen: Mapping[str, Any], file_name: str, source: Path) -> str:
    """The stem of ``file_name``; ValueError when another image already has it."""
    stem = Path(file_name).stem
    if stem in seen:
        raise ValueError(f"{source}: two images share the file stem {stem!r}")
    return stem


def read_yolo(
    labels_dir: str | Path,
    images_dir: str | Path | None = None,
    names: Sequence[str] | Mapping[int, str] | None = None,
) -> GroundTruth:
    """Read YOLO txt labels (``class cx cy w h`` normalised to [0, 1], one object a line).

    Segment lines (``class x1 y1 x2 y2 ...``) count as the bounding box of their polygon.
    Boxes are scaled by the size of the matching image (header only, after EXIF orientation,
    as Ultralytics does) and clipped to it. Label files are found in ``labels_dir`` and its
    subfolders (``labels/train/x.txt`` goes with ``images/train/x.jpg``); a label file of a
    Label Studio export (``55b99580-x.txt``) goes with ``x.jpg`` when no ``55b99580-x.*``
    exists, and the other way round. As in Ultralytics, an image without a label file is a
    negative (no objects); a label file without an image is skipped with a warning.

    Args:
        labels_dir: folder of ``<stem>.txt`` label files.
        images_dir: folder of the images; by default the sibling ``images`` folder
            (``.../labels`` -> ``.../images``, the Ultralytics layout).
        names: class index -> name; by default ``classes.txt`` in ``labels_dir`` if present,
            else the index as a string.

    Returns:
        Ground truth keyed by the file stem.

    Raises:
        ValueError: no label files, no label file has its image, two images share a stem, or
            a line is malformed.
    """
    labels_path = Path(labels_dir)
    img_dir = Path(images_dir) if images_dir is not None else labels_path.parent / "images"
    txt_paths = sorted(p for p in labels_path.rglob("*.txt") if p.name != YOLO_CLASSES_FILE)
    if not txt_paths:
        raise ValueError(f"{labels_path}: expected YOLO .txt label files, found none")
    if names is None and (labels_path / YOLO_CLASSES_FILE).is_file():
        names = (labels_path / YOLO_CLASSES_FILE).read_text().split("\n")
    gt: GroundTruth = {}
    images = _image_files(img_dir)
    labelled: set[Path] = set()
    orphans: list[tuple[Path, Path]] = []
    for txt in txt_paths:
        relative = txt.relative_to(labels_path).with_suffix("")
        labelled.add(relative)
        image = find_image(img_dir / relative.parent, relative.name)
        if image is None:
            image = _uploaded_image(img_dir, relative, images)
        if image is None:
            orphans.append((txt, img_dir / relative.parent))
            continue
        labelled.add(image.relative_to(img_dir).with_suffix(""))
        gt[unique_stem(gt, txt.name, labels_path)] = _read_yolo_file(txt, image, names)
    if orphans:
        _warn_orphans(orphans, bool(gt))
    for image in images:
        if image.relative_to(img_dir).with_suffix("") not in labelled:
            gt[unique_stem(gt, image.name, img_dir)] = GtImage(image.name, image_hw(image), [], [])
    return gt


def _uploaded_image(img_dir: Path, relative: Path, images: Sequence[Path]) -> Path | None:
    """The one image beside where label file ``relative`` expects it whose name is the label's
    once Label Studio's upload prefix is set aside (on either side); None if none or several."""
    folder = img_dir / relative.parent
    beside = {image.stem: image for image in images if image.parent == folder}
    matched = match_ground_truth([relative.name], beside)
    return beside[matched[relative.name]] if matched else None


def _warn_orphans(orphans: list[tuple[Path, Path]], any_read: bool) -> None:
    """Warn about (label file, image folder) pairs without an image; ValueError when no label
    file has its image."""
    txt, folder = orphans[0]
    if not any_read:
        raise ValueError(
            f"{txt}: no image {txt.stem}.* in {folder} to read its size from "
            "(nor an image for any other label file)"
        )
    shown = ", ".join(str(p) for p, _ in orphans[:5]) + (", ..." if len(orphans) > 5 else "")
    logger.warning("%d YOLO label file(s) without an image skipped: %s", len(orphans), shown)


def _image_files(folder: Path) -> list[Path]:
    """The image files below ``folder`` (any depth), sorted; none when it does not exist."""
    if not folder.is_dir():
        return []
    suffixes = set(IMAGE_SUFFIXES)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def _read_yolo_file(
    txt: Path, image: Path, names: Sequence[str] | Mapping[int, str] | None
) -> GtImage:
    """One YOLO label file -> GtImage in pixels of ``image``."""
    height, width = image_hw(image)
    boxes: list[Box] = []
    labels: list[str] = []
    for line_no, line in enumerate(txt.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls = int(float(fields[0]))
            values = [float(v) for v in fields[1:]]
        except ValueError as err:
            raise ValueError(f"{txt}:{line_no}: expected numbers, got {line!r}") from err
        x0, y0, x1, y1 = _yolo_extent(values, f"{txt}:{line_no}")
        boxes.append(
            Box(
                min(max(x0 * width, 0.0), width),
                min(max(y0 * height, 0.0), height),
                min(max(x1 * width, 0.0), width),
                min(max(y1 * height, 0.0), height),
            )
        )
        labels.append(_class_name(names, cls))
    return GtImage(image.name, (height, width), boxes, labels)


def _yolo_extent(values: list[float], where: str) -> tuple[float, float, float, float]:
    """Normalised ``(x0, y0, x1, y1)`` of a ``cx cy w h`` box or an ``x y x y ...`` polygon."""
    if len(values) == 4:
        cx, cy, w, h = values
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        return min(xs), min(ys), max(xs), max(ys)
    raise ValueError(f"{where}: expected 'class cx cy w h' or a polygon, got {len(values)} values")


def _class_name(names: Sequence[str] | Mapping[int, str] | None, cls: int) -> str:
    """Name of class index ``cls`` (the index itself when unknown)."""
    if isinstance(names, Mapping):
        return str(names.get(cls, cls))
    if names is not None and 0 <= cls < len(names) and names[cls].strip():
        return names[cls].strip()
    return str(cls)


GT_FORMATS = ("auto", "voc", "coco", "yolo")
"""Accepted values of ``fmt`` in :func:`read_ground_truth`."""


def read_ground_truth(
    path: str | Path, fmt: str = "auto", images_dir: str | Path | None = None
) -> GroundTruth:
    """Read ground truth in any supported format.

    Auto-detection: a ``.json`` file is COCO; a folder with ``Annotations/`` or ``*.xml`` files
    is VOC; a folder of ``*.txt`` files is YOLO labels, and so is a dataset folder holding
    ``labels/`` (with ``images/`` beside it).

    Args:
        path: the annotation file or folder.
        fmt: one of :data:`GT_FORMATS`.
        images_dir: YOLO only: the image folder (default: the sibling ``images`` folder).

    Returns:
        Ground truth keyed by file stem.

    Raises:
        ValueError: unknown format, nothing recognisable at ``path``, or a reader's error.
    """
    source = Path(path)
    if fmt not in GT_FORMATS:
        raise ValueError(f"ground-truth format {fmt!r} is not one of {', '.join(GT_FORMATS)}")
    if not source.exists():
        raise ValueError(f"{source}: ground-truth path does not exist")
    if fmt == "auto":
        fmt = _detect_format(source)
    if fmt == "coco":
        return read_coco(source)
    if fmt == "voc":
        return read_voc(source)
    if source.is_dir() and not any(source.glob("*.txt")) and (source / "labels").is_dir():
        source = source / "labels"
    return read_yolo(source, images_dir)


def _detect_format(path: Path) -> str:
    """Guess the ground-truth format of ``path`` (see :func:`read_ground_truth`)."""
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise ValueError(f"{path}: expected a COCO .json file or a folder of VOC/YOLO labels")
    if (path / "Annotations").is_dir() or any(path.glob("*.xml")):
        return "voc"
    if any(p.name != YOLO_CLASSES_FILE for p in path.glob("*.txt")):
        return "yolo"
    if (path / "labels").is_dir():
        return "yolo"
    raise ValueError(
        f"{path}: expected VOC .xml files (or Annotations/), YOLO .txt labels (or labels/), "
        "or a COCO .json file"
    )
