"""Inputs of ``zerolabel adapt``: files found and checked, videos decoded at the right frames,
and the multi-crop views drawn from their generator only.

:func:`write_video` and :func:`write_images` make the media other adapt tests train on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from zerolabel.adapt import crops
from zerolabel.adapt.data import Inputs, collect, read_clip, read_image
from zerolabel.errors import ConfigError, ImageLoadError
from zerolabel.io.images import ImageLimits

LEVEL_STEP = 6  # gray level between two frames of write_video


def write_video(path: Path, frames: int, *, size: int = 64, fps: int = 10) -> Path:
    """An H.264 video whose frame ``i`` is uniformly gray at level ``LEVEL_STEP * i``, with a
    bright square that moves one pixel a frame (constant gray survives compression)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0", "g": "8"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            pixels = np.full((size, size, 3), LEVEL_STEP * index % 256, dtype=np.uint8)
            pixels[8:20, 4 + index % 30 : 16 + index % 30] = 255
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_images(folder: Path, count: int, *, size: int = 64, seed: int = 0) -> list[Path]:
    """``count`` PNG images of random squares on noise (distinct contents)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        top, left = rng.integers(0, size // 2, 2)
        pixels[top : top + size // 3, left : left + size // 3] = rng.integers(120, 255, 3)
        path = folder / f"image_{index:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _gray_level(frame: torch.Tensor) -> int:
    """The level of a frame of write_video, read away from its square."""
    return round(float(frame[:, 30:, :].mean()) * 255)


# --- finding and checking inputs ------------------------------------------------------------


def test_images_and_videos_are_found_checked_and_ordered_by_content(tmp_path):
    write_images(tmp_path / "photos" / "nested", 3)
    write_video(tmp_path / "photos" / "walk.mp4", 20)
    (tmp_path / "photos" / "notes.txt").write_text("not an input")
    inputs = collect([tmp_path / "photos"], clip_frames=4, frame_step=3, progress=False)
    assert len(inputs.images) == 3 and len(inputs.videos) == 1
    assert [image.sha256 for image in inputs.images] == sorted(i.sha256 for i in inputs.images)
    (video,) = inputs.videos
    assert (video.frames, video.step, video.fps) == (20, 3, 10.0)
    assert len(inputs) == 3 + video.clip_starts(4) == 3 + 20 - 9
    assert inputs.item(2).image == inputs.images[2]
    last = inputs.item(len(inputs) - 1)
    assert last.is_clip and last.start == 10


def test_the_digest_follows_the_contents_not_the_names(tmp_path):
    write_images(tmp_path / "a", 2)
    first = collect([tmp_path / "a"], clip_frames=2, frame_step=1, progress=False)
    (tmp_path / "a").rename(tmp_path / "b")
    for path in (tmp_path / "b").iterdir():
        path.rename(path.with_name("renamed_" + path.name))
    moved = collect([tmp_path / "b"], clip_frames=2, frame_step=1, progress=False)
    assert moved.digest == first.digest
    write_images(tmp_path / "c", 3)
    assert (
        collect([tmp_path / "c"], clip_frames=2, frame_step=1, progress=False).digest
        != first.digest
    )


def test_a_short_video_takes_a_smaller_step(tmp_path):
    write_video(tmp_path / "short.mp4", 10)
    inputs = collect([tmp_path / "short.mp4"], clip_frames=4, frame_step=60, progress=False)
    assert inputs.videos[0].step == 3  # (10 - 1) // (4 - 1)
    assert len(inputs) == 10 - 3 * 3


def test_a_folder_with_no_images_is_refused_by_name(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ConfigError, match="empty holds no image or video"):
        collect([tmp_path / "empty"], clip_frames=8, frame_step=60, progress=False)


def test_a_missing_path_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder"):
        collect([tmp_path / "nowhere"], clip_frames=8, frame_step=60, progress=False)


def test_a_corrupt_video_is_refused_before_training(tmp_path):
    write_images(tmp_path / "ok", 1)
    bad = tmp_path / "ok" / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    with pytest.raises(ImageLoadError, match="broken.mp4: not a readable video"):
        collect([tmp_path / "ok"], clip_frames=8, frame_step=60, progress=False)


def test_a_truncated_image_is_refused_before_training(tmp_path):
    (path,) = write_images(tmp_path, 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="image_000.png"):
        collect([path], clip_frames=8, frame_step=60, progress=False)


def test_a_video_shorter_than_a_clip_is_refused(tmp_path):
    write_video(tmp_path / "tiny.mp4", 3)
    with pytest.raises(ImageLoadError, match="3 frames, fewer than the 8 of a clip"):
        collect([tmp_path / "tiny.mp4"], clip_frames=8, frame_step=60, progress=False)


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 5, 11])
def test_a_clip_holds_the_frames_it_names(tmp_path, start):
    video_path = write_video(tmp_path / "walk.mp4", 40)
    (video,) = collect([video_path], clip_frames=4, frame_step=9, progress=False).videos
    clip = read_clip(video, start, 4, max_side=64)
    assert clip.shape == (4, 3, 64, 64)
    levels = [_gray_level(frame) for frame in clip]
    expected = [LEVEL_STEP * (start + 9 * i) % 256 for i in range(4)]
    assert all(abs(a - b) <= 2 for a, b in zip(levels, expected, strict=True)), levels


def test_frames_and_images_are_shrunk_to_max_side(tmp_path):
    video_path = write_video(tmp_path / "walk.mp4", 12, size=64)
    (video,) = collect([video_path], clip_frames=2, frame_step=1, progress=False).videos
    assert read_clip(video, 0, 2, max_side=32).shape == (2, 3, 32, 32)
    (path,) = write_images(tmp_path / "img", 1, size=64)
    inputs = collect([path], clip_frames=2, frame_step=1, progress=False)
    pixels = read_image(inputs.images[0], ImageLimits(), max_side=40)
    assert pixels.shape == (3, 40, 40) and 0.0 <= float(pixels.min()) <= float(pixels.max()) <= 1.0


def test_an_index_beyond_the_items_is_an_error():
    inputs = Inputs((), (), 8)
    with pytest.raises(IndexError):
        inputs.item(0)


# --- views ------------------------------------------------------------------------------------

SETTINGS = crops.CropSettings(
    global_size=32,
    local_size=16,
    local_crops=3,
    global_scale=(0.4, 1.0),
    local_scale=(0.05, 0.4),
    clip_scale=(0.2, 1.0),
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_a_random_box_lies_inside_and_covers_its_share_of_the_area():
    generator = _generator(0)
    for _ in range(200):
        box = crops.random_box(generator, (60, 80), (0.4, 1.0))
        assert 0 <= box.top and box.top + box.height <= 60
        assert 0 <= box.left and box.left + box.width <= 80
        assert 0.35 <= box.height * box.width / (60 * 80) <= 1.0


def test_an_image_too_narrow_for_any_box_gets_the_central_crop():
    box = crops.random_box(_generator(0), (10, 200), (0.9, 1.0))
    assert (box.height, box.width) == (10, round(10 * 4 / 3)) and box.top == 0
    assert box.left == (200 - box.width) // 2


def test_image_views_come_from_the_generator_only():
    pixels = torch.rand(3, 48, 64, generator=_generator(5))
    global_views, local_views = crops.image_views(pixels, _generator(1), SETTINGS)
    assert global_views.shape == (2, 3, 32, 32) and local_views.shape == (3, 3, 16, 16)
    again = crops.image_views(pixels, _generator(1), SETTINGS)
    assert torch.equal(global_views, again[0]) and torch.equal(local_views, again[1])
    other = crops.image_views(pixels, _generator(2), SETTINGS)
    assert not torch.equal(global_views, other[0])


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    x, y = a.mean(dim=0).flatten(), b.mean(dim=0).flatten()
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def test_the_frames_of_a_clip_share_one_crop():
    """Every frame is the same smooth gray noise: views of one crop differ only by monotone
    colour changes and blur, so their pixels stay correlated; other crops are not."""
    coarse = torch.rand(1, 1, 6, 6, generator=_generator(3))
    noise = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bicubic").clamp(0, 1)
    frames = noise.expand(4, 3, -1, -1).clone()
    for seed in range(4):
        global_views, local_views = crops.clip_views(frames, _generator(seed), SETTINGS)
        assert global_views.shape == (4, 3, 32, 32) and local_views.shape == (4, 3, 3, 16, 16)
        for view in global_views[1:]:
            assert _correlation(global_views[0], view) > 0.9
    crops_of_one_image = crops.image_views(frames[0], _generator(0), SETTINGS)[0]
    assert _correlation(*crops_of_one_image) < 0.9
