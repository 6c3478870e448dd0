"""Label Studio's folders mounted on a worker: its image URLs read from disk, nothing else."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from zerolabel.contract import DiscoveryRequest
from zerolabel.errors import ConfigError, ImageLoadError
from zerolabel.io.fetch import Fetcher, FetchPolicy
from zerolabel.io.images import ImageLimits
from zerolabel.io.ls_folders import LabelStudioFolders
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.settings import WorkerSettings

from tests.ls_fake import FakeLabelStudio, fake_label_studios

KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233"
LIMITS = ImageLimits()


def _jpeg(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def folders(tmp_path: Path) -> LabelStudioFolders:
    """A media folder with one upload and a local-files root with one image in a subfolder."""
    (tmp_path / "media" / "upload" / "3").mkdir(parents=True)
    (tmp_path / "media" / "upload" / "3" / "ab12cd34-a photo.jpg").write_bytes(_jpeg(1))
    (tmp_path / "files" / "set1").mkdir(parents=True)
    (tmp_path / "files" / "set1" / "b.jpg").write_bytes(_jpeg(2))
    (tmp_path / "secret.jpg").write_bytes(_jpeg(3))
    return LabelStudioFolders(str(tmp_path / "media"), str(tmp_path / "files"))


@pytest.fixture
def ls() -> Iterator[FakeLabelStudio]:
    with fake_label_studios(KEY) as start:
        yield start()


def test_upload_and_local_files_urls_map_to_their_files(folders, tmp_path):
    upload = folders.file_for("/data/upload/3/ab12cd34-a%20photo.jpg", "")
    assert upload == tmp_path / "media" / "upload" / "3" / "ab12cd34-a photo.jpg"
    local = folders.file_for("/data/local-files/", "d=set1%2Fb.jpg")
    assert local == tmp_path / "files" / "set1" / "b.jpg"
    assert folders.file_for("/data/local-files/", "d=set1/b.jpg") == local


@pytest.mark.parametrize(
    ("path", "query"),
    [
        pytest.param("/data/upload/3/missing.jpg", "", id="no-such-file"),
        pytest.param("/data/upload/x/ab12cd34-a%20photo.jpg", "", id="project-not-a-number"),
        pytest.param("/data/upload/3/sub/file.jpg", "", id="nested-upload"),
        pytest.param("/data/upload/3/ab12cd34-a%20photo.jpg", "x=1", id="query-on-upload"),
        pytest.param("/data/upload/3/..%2F..%2F..%2Fsecret.jpg", "", id="encoded-dot-segments"),
        pytest.param("/data/upload/3/%2e%2e", "", id="dot-dot-name"),
        pytest.param("/data/local-files/", "d=..%2Fsecret.jpg", id="local-files-escape"),
        pytest.param("/data/local-files/", "d=set1%5Cb.jpg", id="backslash"),
        pytest.param("/data/local-files/", "d=set1/b.jpg&d=set1/b.jpg", id="two-d"),
        pytest.param("/data/local-files/", "d=set1", id="a-folder"),
        pytest.param("/data/local-files/", "", id="no-d"),
        pytest.param("/api/projects/3", "", id="not-an-image-path"),
    ],
)
def test_what_names_no_file_inside_the_folders_maps_to_nothing(folders, path, query):
    assert folders.file_for(path, query) is None


def test_a_link_out_of_the_folder_maps_to_nothing(folders, tmp_path):
    os.symlink(tmp_path / "secret.jpg", tmp_path / "files" / "set1" / "link.jpg")
    assert folders.file_for("/data/local-files/", "d=set1/link.jpg") is None


def test_a_folder_that_does_not_exist_is_refused_naming_its_setting(tmp_path):
    with pytest.raises(ConfigError, match="ZEROLABEL_LABEL_STUDIO_MEDIA"):
        LabelStudioFolders(media=str(tmp_path / "nowhere")).check()
    with pytest.raises(ConfigError, match="ZEROLABEL_LABEL_STUDIO_FILES"):
        FetchPolicy.from_settings(WorkerSettings(ls_files_root=str(tmp_path / "nowhere")), None)
    env = {"ZEROLABEL_LABEL_STUDIO_MEDIA": str(tmp_path), "ZEROLABEL_LABEL_STUDIO_FILES": "/x"}
    settings = WorkerSettings.from_env(env)
    assert (settings.ls_media, settings.ls_files_root) == (str(tmp_path), "/x")


def test_the_fetcher_reads_label_studio_urls_from_disk_and_downloads_the_rest(
    folders, ls, tmp_path
):
    ls.images["/data/upload/3/elsewhere.jpg"] = _jpeg(4)  # kept by Label Studio only
    fetcher = Fetcher(FetchPolicy(ls.url, KEY, ls_folders=folders))
    on_disk = fetcher.fetch("/data/upload/3/ab12cd34-a%20photo.jpg", LIMITS)
    absolute = fetcher.fetch(f"{ls.url}/data/local-files/?d=set1/b.jpg", LIMITS)
    assert ls.seen == []  # neither was downloaded
    assert on_disk.source == f"{ls.url}/data/upload/3/ab12cd34-a%20photo.jpg"  # the URL's name
    assert on_disk.original_hw == absolute.original_hw == (30, 40)
    assert fetcher.fetch_bytes("/data/upload/3/ab12cd34-a%20photo.jpg", LIMITS) == _jpeg(1)
    assert fetcher.fetch("/data/upload/3/elsewhere.jpg", LIMITS).original_hw == (30, 40)
    assert [path for _, path, _ in ls.seen] == ["/data/upload/3/elsewhere.jpg"]
    fetcher.close()


def test_urls_of_another_host_are_never_read_from_the_folders(folders, ls):
    with fake_label_studios(KEY) as start:
        other = start()
        host = other.url.removeprefix("http://")
        fetcher = Fetcher(FetchPolicy(ls.url, KEY, allowed_hosts={host}, ls_folders=folders))
        with pytest.raises(ImageLoadError, match="401"):  # asked of that host (no token sent)
            fetcher.fetch(f"{other.url}/data/upload/3/ab12cd34-a%20photo.jpg", LIMITS)
        assert [path for _, path, _ in other.seen] == ["/data/upload/3/ab12cd34-a%20photo.jpg"]
        assert ls.seen == []
        fetcher.close()


def test_a_worker_with_the_media_folder_loads_uploads_without_asking_label_studio(
    folders, ls, tmp_path
):
    settings = WorkerSettings(ls_url=ls.url, ls_token=KEY, ls_media=folders.media)
    runtime = WorkerRuntime(settings)
    request = DiscoveryRequest(settings.spec(), "/data/upload/3/ab12cd34-a%20photo.jpg", 9)
    loaded = runtime.load(request)
    assert loaded.image is not None and loaded.image.original_hw == (30, 40)
    assert ls.seen == []
    runtime.close()
