"""``zerolabel export`` end to end in one process: negatives sized from the document root,
images downloaded byte for byte and only for exported tasks, the split options.

Downloads never reach the network: the fetcher's one download step is replaced by a lookup in a
dict of served bytes, so everything above it (URL resolution, saving) runs as in production.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from PIL import Image
from zerolabel.cli.main import main
from zerolabel.io.fetch import Fetcher

LS_URL = "http://127.0.0.1:9"  # never contacted: downloads are served from SERVED


def _jpeg_with_exif(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "zerolabel-test-camera"  # Make
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG", quality=97, exif=exif)
    return out.getvalue()


def _rect(width: int, height: int) -> dict[str, Any]:
    return {
        "id": "r1",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "value": {"x": 10, "y": 10, "width": 50, "height": 50, "rectanglelabels": ["object"]},
    }


def _task(task_id: int, url: str, result: list[Any] | None) -> dict[str, Any]:
    annotations = [] if result is None else [{"id": task_id, "result": result}]
    return {"id": task_id, "data": {"image": url}, "annotations": annotations, "predictions": []}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ZEROLABEL_", "LABEL_STUDIO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LABEL_STUDIO_URL", LS_URL)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "token")


class _Server:
    """URL -> the bytes 'Label Studio' sends, and the URLs asked for, in order."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.asked: list[str] = []

    def download(self, target: Any) -> tuple[bytes, str]:
        url = str(target.url)  # the fetcher's one parse of the URL
        self.asked.append(url)
        return self.files[url], "image/jpeg"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> _Server:
    server = _Server()
    monkeypatch.setattr(Fetcher, "_download", lambda _self, url, _limits: server.download(url))
    return server


def _export(tmp_path: Path, tasks: list[dict[str, Any]], *args: str) -> Result:
    source = tmp_path / "tasks.json"
    source.write_text(json.dumps(tasks))
    return CliRunner().invoke(
        main, ["export", "--from-file", str(source), "-o", str(tmp_path / "out"), *args]
    )


def test_downloaded_images_are_the_served_bytes_and_only_exported_ones(
    tmp_path: Path, environment: None, served: _Server
) -> None:
    photo, other = _jpeg_with_exif((40, 30), (200, 10, 10)), _jpeg_with_exif((20, 20), (0, 0, 0))
    served.files[LS_URL + "/data/upload/1/a.jpg"] = photo
    served.files[LS_URL + "/data/upload/1/b.jpg"] = other
    tasks = [
        _task(1, "/data/upload/1/a.jpg", [_rect(40, 30)]),
        _task(2, "/data/upload/1/b.jpg", None),  # not annotated: not exported
    ]
    result = _export(tmp_path, tasks, "--download-images", "-f", "yolo", "-f", "coco")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert (out / "images" / "a.jpg").read_bytes() == photo  # EXIF and pixels intact
    assert (out / "yolo" / "images" / "a.jpg").read_bytes() == photo
    assert not (out / "images" / "b.jpg").exists()
    assert served.asked == [LS_URL + "/data/upload/1/a.jpg"]


def test_a_negative_is_sized_from_the_downloaded_image(
    tmp_path: Path, environment: None, served: _Server
) -> None:
    served.files[LS_URL + "/data/upload/1/n.jpg"] = _jpeg_with_exif((64, 48), (1, 2, 3))
    result = _export(tmp_path, [_task(4, "/data/upload/1/n.jpg", [])], "--download-images")
    assert result.exit_code == 0, result.output
    coco = json.loads((tmp_path / "out" / "coco.json").read_text())
    assert [(im["width"], im["height"]) for im in coco["images"]] == [(64, 48)]
    assert coco["annotations"] == []
    assert "1 image(s) sized from downloaded image: task(s) 4" in result.output


def test_negatives_are_sized_from_the_document_root_or_reported_by_task_id(
    tmp_path: Path, environment: None
) -> None:
    root = tmp_path / "root"
    (root / "set").mkdir(parents=True)
    Image.new("RGB", (36, 24)).save(root / "set" / "empty.png")
    tasks = [
        _task(1, "/data/local-files/?d=set/full.png", [_rect(36, 24)]),
        _task(7, "/data/local-files/?d=set/empty.png", []),
        _task(8, "/data/local-files/?d=set/missing.png", []),
    ]
    result = _export(tmp_path, tasks, "--document-root", str(root), "-f", "yolo", "-f", "coco")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    coco = json.loads((out / "coco.json").read_text())
    sizes = {im["ls_task_id"]: (im["width"], im["height"]) for im in coco["images"]}
    assert sizes == {1: (36, 24), 7: (36, 24)}
    assert (out / "yolo" / "labels" / "set" / "empty.txt").read_text() == ""
    assert "sized from image file under the document root: task(s) 7" in result.output
    assert "1 negative task(s) left out, image size unknown: task(s) 8" in result.output


def test_download_copies_the_files_of_the_document_root_without_fetching(
    tmp_path: Path, environment: None, served: _Server
) -> None:
    (tmp_path / "root").mkdir()
    photos = {name: _jpeg_with_exif((30, 20), (n, 6, 7)) for n, name in enumerate(["p", "q"])}
    tasks = []
    for name, photo in photos.items():
        (tmp_path / "root" / f"{name}.jpg").write_bytes(photo)
        task = _task(0, f"/data/local-files/?d={name}.jpg", [_rect(30, 20)])
        del task["id"]  # as `zerolabel predict` writes them: no ids
        tasks.append(task)
    args = ["--download-images", "--document-root", str(tmp_path / "root"), "-f", "voc"]
    result = _export(tmp_path, tasks, *args)
    assert result.exit_code == 0, result.output
    for name, photo in photos.items():
        assert (tmp_path / "out" / "images" / f"{name}.jpg").read_bytes() == photo
        assert (tmp_path / "out" / "voc" / "JPEGImages" / f"{name}.jpg").read_bytes() == photo
    assert served.asked == []


def test_val_fraction_splits_the_export(tmp_path: Path, environment: None) -> None:
    tasks = [_task(i, f"/data/upload/1/{i}.jpg", [_rect(40, 30)]) for i in range(1, 6)]
    result = _export(tmp_path, tasks, "--val-fraction", "0.4", "--seed", "3")
    assert result.exit_code == 0, result.output
    labels = tmp_path / "out" / "yolo" / "labels"
    assert len(list((labels / "val").glob("*.txt"))) == 2
    assert len(list((labels / "train").glob("*.txt"))) == 3
    refused = _export(tmp_path, tasks, "--val-fraction", "1")
    assert refused.exit_code == 2 and "--val-fraction" in refused.output
