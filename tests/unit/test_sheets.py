"""clusters-sheet: one PNG per pseudo-class, its crops placed in a grid under its name and size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner
from PIL import Image
from zerolabel.cli.main import main
from zerolabel.contract import Box
from zerolabel.loop.sheets import GAP, HEADER, Member, SheetLayout, sample

BLUE = (30, 30, 200)
SIDE = 64


def _red(index: int) -> tuple[int, int, int]:
    return (200 - 2 * index, 30, 30)


def _box(n: int, label: str, x: int, y: int, w: int, h: int) -> dict[str, Any]:
    to_pct = 100 / SIDE
    value = {"x": x * to_pct, "y": y * to_pct, "width": w * to_pct, "height": h * to_pct}
    return {
        "id": f"zl-ab12-{n}-box",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": SIDE,
        "original_height": SIDE,
        "value": {**value, "rectanglelabels": [label]},
    }


def _photos(folder: Path, count: int) -> list[dict[str, Any]]:
    """``count`` photos, each a red square (cluster_00, a shade of its own) and a blue strip
    (cluster_01)."""
    folder.mkdir(parents=True)
    tasks = []
    for index in range(count):
        pixels = np.full((SIDE, SIDE, 3), 255, dtype=np.uint8)
        pixels[8:24, 8:24] = _red(index)
        pixels[40:48, 4:60] = BLUE
        Image.fromarray(pixels).save(folder / f"{index}.png")
        result = [_box(0, "cluster_00", 8, 8, 16, 16), _box(1, "cluster_01", 4, 40, 56, 8)]
        tasks.append(
            {
                "id": index + 1,
                "data": {"image": f"/data/local-files/?d={index}.png"},
                "predictions": [{"model_version": "v1", "result": result}],
            }
        )
    return tasks


def _run(tmp_path: Path, count: int, *extra: str) -> Path:
    tasks = _photos(tmp_path / "photos", count)
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    out = tmp_path / "sheets"
    args = ["clusters-sheet", str(tmp_path / "tasks.json"), "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--document-root", str(tmp_path / "photos"), *extra])
    assert result.exit_code == 0, result.output
    return out


def _tile_centre(sheet: Image.Image, layout: SheetLayout, index: int) -> tuple[int, ...]:
    x, y = layout.origin(index)
    return tuple(sheet.getpixel((x + layout.tile // 2, y + layout.tile // 2)))


def test_one_sheet_per_cluster_with_its_crops_in_the_tiles(tmp_path):
    out = _run(tmp_path, 3)
    layout = SheetLayout()
    assert sorted(p.name for p in out.iterdir()) == ["cluster_00.png", "cluster_01.png"]
    for name, colours in (("cluster_00", [_red(i) for i in range(3)]), ("cluster_01", [BLUE] * 3)):
        sheet = Image.open(out / f"{name}.png").convert("RGB")
        assert sheet.size == layout.size == (4 + 4 * 132, HEADER + 4 + 4 * 132)
        assert [_tile_centre(sheet, layout, i) for i in range(3)] == colours
        assert _tile_centre(sheet, layout, 3) == (220, 220, 220)  # unused tile
        header = np.asarray(sheet)[GAP:HEADER, :200]
        assert (header < 128).any()  # the name and size are written in the band


def test_a_strip_is_fitted_into_its_tile_keeping_its_aspect(tmp_path):
    out = _run(tmp_path, 1, "--tile", "56")
    layout = SheetLayout(tile=56)
    sheet = np.asarray(Image.open(out / "cluster_01.png").convert("RGB"))
    x, y = layout.origin(0)
    tile = sheet[y : y + 56, x : x + 56]
    blue_rows = np.flatnonzero((tile == BLUE).all(axis=2).all(axis=1))
    assert len(blue_rows) == 8 and (tile[blue_rows[0]] == BLUE).all()  # 56 x 8, full width


def test_samples_are_a_seeded_choice_in_order():
    members = [Member(i, Box(0, 0, 1, 1)) for i in range(40)]
    picked = sample(members, 16, seed=3)
    assert len(picked) == 16 and picked == sorted(picked, key=lambda m: m.task)
    assert sample(members, 16, seed=3) == picked != sample(members, 16, seed=4)
    assert sample(members[:5], 16, seed=3) == members[:5]


def test_the_same_tasks_and_seed_draw_the_same_sheets(tmp_path):
    first = _run(tmp_path / "a", 20, "-n", "4")
    second = _run(tmp_path / "b", 20, "-n", "4")
    other_seed = _run(tmp_path / "c", 20, "-n", "4", "--seed", "1")
    drawn = (first / "cluster_00.png").read_bytes()
    assert (second / "cluster_00.png").read_bytes() == drawn
    assert (other_seed / "cluster_00.png").read_bytes() != drawn
    sheet = Image.open(first / "cluster_00.png").convert("RGB")
    layout = SheetLayout(samples=4)
    assert sheet.size == layout.size
    shades = [_tile_centre(sheet, layout, i) for i in range(4)]
    assert len(set(shades)) == 4 and all(s in [_red(i) for i in range(20)] for s in shades)


def test_tasks_without_labelled_objects_are_refused(tmp_path):
    (tmp_path / "tasks.json").write_text(json.dumps([{"id": 1, "data": {"image": "x.png"}}]))
    result = CliRunner().invoke(main, ["clusters-sheet", str(tmp_path / "tasks.json")])
    assert result.exit_code == 1
    assert "no labelled objects in the tasks: run zerolabel cluster first" in result.output


# --- explanations: the top representer patches of an rps fit --------------------------------


class _Shown:
    """A patch to show (what :func:`write_patch_sheets` reads of a representer)."""

    def __init__(self, name: str, pixels: np.ndarray, box: Box) -> None:
        self.name, self.box, self._pixels = name, box, pixels
        self.loads = 0

    def load(self):
        from zerolabel.errors import ImageLoadError
        from zerolabel.io.images import LoadedImage

        self.loads += 1
        if self._pixels is None:
            raise ImageLoadError(self.name, "gone")
        return LoadedImage(self.name, self._pixels, self._pixels.shape[:2], "digest")


def test_patch_sheets_show_each_patch_outlined_in_its_surroundings(tmp_path):
    from zerolabel.loop.sheets import OUTLINE, patch_in_context, write_patch_sheets

    pixels = np.full((64, 96, 3), 255, dtype=np.uint8)
    pixels[16:32, 32:48] = BLUE  # the patch
    crop = np.asarray(patch_in_context(_image(pixels), Box(32, 16, 48, 32)))
    # 4 patches on each axis centred on the patch: x 8..72, y -8..56 clipped to 0..56
    assert crop.shape == (56, 64, 3)
    assert tuple(crop[16, 24]) == OUTLINE and tuple(crop[16 + 15, 24 + 8]) == OUTLINE
    assert tuple(crop[16 + 8, 24 + 8]) == BLUE  # the patch itself is not painted over
    shown = [_Shown("a", pixels, Box(32, 16, 48, 32)), _Shown("missing", None, Box(0, 0, 8, 8))]
    written = write_patch_sheets(
        {"cat/dog": shown, "all": shown[:1]}, tmp_path, caption="top representer patches"
    )
    assert {path.name for path in written.values()} == {"cat_dog.png", "all.png"}
    assert shown[0].loads == 1  # each image loaded once for every sheet
    sheet = np.asarray(Image.open(written["cat/dog"]))
    # the crop enlarged x2 (112 x 128) and centred in its tile; the unreadable image grey
    assert tuple(sheet[HEADER + GAP + 8 + 2 * 24, GAP + 2 * 32]) == BLUE
    assert tuple(sheet[HEADER + GAP + 64, 2 * GAP + 128 + 64]) == (220, 220, 220)


def _image(pixels: np.ndarray):
    from zerolabel.io.images import LoadedImage

    return LoadedImage("x", pixels, pixels.shape[:2], "digest")
