"""Export never writes outside its output folder, whatever a task's image URL says (security
review, finding 3: ``%2F`` and ``..%2F`` in a URL wrote YOLO/VOC labels and images elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest
from zerolabel.formats.export import export
from zerolabel.formats.images import ImageStore
from zerolabel.formats.reader import file_name_from_url, inside

from tests.ls_fake import png


@pytest.mark.parametrize(
    ("url", "name"),
    [
        pytest.param("http://h/img/%2Ftmp%2Fx.jpg", "x.jpg", id="encoded-absolute"),
        pytest.param("http://h/img/..%2F..%2Fx.jpg", "x.jpg", id="encoded-dot-dot"),
        pytest.param("http://h/img/..%5C..%5Cx.jpg", "x.jpg", id="encoded-backslashes"),
        pytest.param("http://h/img/%2E%2E", "", id="only-dot-dot"),
        pytest.param("/data/upload/3/ab12cd34-x.jpg", "ab12cd34-x.jpg", id="upload"),
        pytest.param("/data/local-files/?d=..%2F..%2Fx.jpg", "x.jpg", id="local-dot-dot"),
        pytest.param("/data/local-files/?d=%2Fetc%2Fx.jpg", "etc/x.jpg", id="local-absolute"),
        pytest.param("/data/local-files/?d=set1/a.jpg", "set1/a.jpg", id="local"),
    ],
)
def test_a_url_gives_a_name_that_stays_below_the_folder(url: str, name: str):
    assert file_name_from_url(url) == name


def test_inside_refuses_what_would_leave_the_folder(tmp_path: Path):
    root = tmp_path / "out"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    assert inside(root, "a/b.txt") == root / "a" / "b.txt"
    for name in ("../x.txt", "/etc/x.txt", "link/x.txt"):
        with pytest.raises(ValueError, match="outside"):
            inside(root, name)


def _task(task_id: int, url: str) -> dict:
    box = {
        "id": "b",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 8,
        "original_height": 6,
        "value": {"x": 10, "y": 10, "width": 50, "height": 50, "rectanglelabels": ["object"]},
    }
    return {"id": task_id, "data": {"image": url}, "annotations": [{"id": 1, "result": [box]}]}


def test_export_of_hostile_urls_writes_only_inside_its_folder(tmp_path: Path):
    out = tmp_path / "deep" / "out"
    victim = tmp_path / "deep" / "x.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    tasks = [
        _task(1, "http://h/img/..%2F..%2F..%2Fx.jpg"),  # once: labels/../../../x.txt
        _task(2, "http://h/img/%2F" + str(tmp_path).replace("/", "%2F") + "%2Fy.jpg"),
    ]
    export(tasks, out, formats=("coco", "yolo", "voc"))
    store = ImageStore(out / "images", fetch=lambda url: png((8, 6)))
    saved = [store.get(task["data"]["image"]) for task in tasks]
    assert victim.read_text() == "keep me"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != victim]
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written)
    assert (out / "yolo" / "labels" / "x.txt").is_file()
    assert (out / "voc" / "Annotations" / "y.xml").is_file()
    assert saved == [out / "images" / "x.jpg", out / "images" / "y.jpg"]
