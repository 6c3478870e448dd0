"""The images of an export: local copies, bytes as served, and image sizes for negatives.

:class:`ImageStore` keeps one file per exported image under ``folder/<file_name>`` holding the
bytes exactly as the server sent them (never decoded and re-encoded: EXIF and pixels intact).
:func:`image_sizer` reads an image's size from a local file (Label Studio's local-files
document root) or from the store, for results that carry none (negatives).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from PIL import Image

from zerolabel.errors import DiscoveryError
from zerolabel.evaluation.ground_truth import image_hw
from zerolabel.formats.dataset import Dataset
from zerolabel.formats.reader import ImageSizer, file_name_from_url

logger = logging.getLogger(__name__)

SIZE_FROM_FILE = "image file under the document root"
SIZE_FROM_DOWNLOAD = "downloaded image"
"""How an image was sized (:attr:`~zerolabel.formats.dataset.ImageRecord.size_from`)."""

Fetch = Callable[[str], bytes]
"""Image URL -> its bytes as served."""


class ImageStore:
    """Downloads each image once, into ``folder/<file_name>``, byte for byte.

    A file already there is taken as the image (a rerun downloads nothing again). Failures
    are kept in :attr:`failures` (task id -> reason), never raised.
    """

    def __init__(self, folder: Path, fetch: Fetch, image_key: str) -> None:
        self.folder = folder
        self._fetch = fetch
        self._key = image_key
        self.failures: dict[Any, str] = {}

    def get(self, task: dict[str, Any]) -> Path | None:
        """The local copy of the task's image, downloaded if needed; None when it failed."""
        data = task.get("data")
        url = data.get(self._key) if isinstance(data, dict) else None
        name = file_name_from_url(url) if isinstance(url, str) else ""
        if not isinstance(url, str) or not name:
            self.failures[task.get("id")] = f"no image URL under data[{self._key!r}]"
            return None
        target = self.folder / name
        if target.is_file():
            return target
        try:
            body = self._fetch(url)
            _check_image(body)
        except (DiscoveryError, ValueError, OSError) as exc:
            self.failures[task.get("id")] = str(exc)
            logger.error("task %s: image not downloaded: %s", task.get("id"), exc)
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(body)
        partial.replace(target)
        return target

    def get_all(self, ds: Dataset, data: list[dict[str, Any]]) -> dict[str, Path]:
        """The local copy of every image of ``ds`` (only those), by file name."""
        tasks = {task.get("id"): task for task in data if isinstance(task, dict)}
        files: dict[str, Path] = {}
        for image in ds.images:
            task = tasks.get(image.task_id)
            path = self.get(task) if task is not None else None
            if path is not None:
                files[image.file_name] = path
        return files


def _check_image(body: bytes) -> None:
    """ValueError when ``body`` is no image PIL can identify (an HTML page, say)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as image:
                image.size  # noqa: B018  (header parsed)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the server did not send an image ({exc})") from None


LocalFile = Callable[[dict[str, Any]], Path | None]
"""Task -> its image file on this machine, or None."""


def local_file(document_root: Path, url_prefix: str, image_key: str) -> LocalFile:
    """Task -> its image file below ``document_root`` (URLs ``url_prefix`` + relative path),
    or None when its URL has another form or no such file exists."""
    root = document_root.resolve()

    def find(task: dict[str, Any]) -> Path | None:
        data = task.get("data")
        url = data.get(image_key) if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(url_prefix):
            return None
        local = "/data/local-files" in url
        name = file_name_from_url(url) if local else unquote(url.removeprefix(url_prefix))
        path = (root / name).resolve() if name else None
        if path is None or not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    return find


def image_sizer(local: LocalFile | None, store: ImageStore | None) -> ImageSizer:
    """Sizes from the local file when there is one, else from the store's copy."""
    finders: list[tuple[str, LocalFile]] = []
    if local is not None:
        finders.append((SIZE_FROM_FILE, local))
    if store is not None:
        finders.append((SIZE_FROM_DOWNLOAD, store.get))

    def size(task: dict[str, Any]) -> tuple[tuple[int, int], str] | None:
        for how, find in finders:
            path = find(task)
            if path is None:
                continue
            try:
                return image_hw(path), how
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                logger.warning("task %s: cannot read the size of %s: %s", task.get("id"), path, exc)
        return None

    return size
