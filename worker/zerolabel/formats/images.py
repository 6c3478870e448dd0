"""The images of an export: local copies, bytes as served, and image sizes for negatives.

:class:`ImageStore` keeps one file per exported image under ``folder/<file_name>`` holding the
bytes exactly as the server sent them, or as the file under Label Studio's local-files document
root holds them (never decoded and re-encoded: EXIF and pixels intact).
:func:`image_sizer` reads an image's size from a local file (Label Studio's local-files
document root) or from the store, for results that carry none (negatives).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

from PIL import Image

from zerolabel.errors import DiscoveryError
from zerolabel.formats.dataset import Dataset
from zerolabel.formats.reader import ImageSizer, file_name_from_url, inside
from zerolabel.io.images import image_hw
from zerolabel.progress import track
from zerolabel.sites import LOCAL_FILES_PATH

logger = logging.getLogger(__name__)

SIZE_FROM_FILE = "image file under the document root"
SIZE_FROM_DOWNLOAD = "downloaded image"
"""How an image was sized (:attr:`~zerolabel.formats.dataset.ImageRecord.size_from`)."""

Fetch = Callable[[str], bytes]
"""Image URL -> its bytes as served."""

LocalFile = Callable[[str], Path | None]
"""Image URL -> its file on this machine, or None."""


class ImageStore:
    """Saves each image once, into ``folder/<file_name>``, byte for byte.

    The bytes come from the image's file on this machine when ``local`` finds one, else from
    ``fetch``. A file already in ``folder`` is taken as the image (a rerun fetches nothing
    again). Failures are kept in :attr:`failures` (image URL -> reason), never raised.
    """

    def __init__(self, folder: Path, fetch: Fetch, local: LocalFile | None = None) -> None:
        self.folder = folder
        self._fetch = fetch
        self._local = local
        self.failures: dict[str, str] = {}

    def get(self, url: str) -> Path | None:
        """The local copy of the image at ``url``, saved if needed; None when that failed."""
        try:
            target = inside(self.folder, file_name_from_url(url))
        except ValueError as exc:
            self.failures[url] = str(exc)
            logger.error("%s: image not saved: %s", url, exc)
            return None
        if target.is_file():
            return target
        try:
            found = self._local(url) if self._local is not None else None
            body = found.read_bytes() if found is not None else self._fetch(url)
            _check_image(body)
        except (DiscoveryError, ValueError, OSError) as exc:
            self.failures[url] = str(exc)
            logger.error("%s: image not saved: %s", url, exc)
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(body)
        partial.replace(target)
        return target

    def get_all(self, ds: Dataset) -> dict[str, Path]:
        """The local copy of every image of ``ds`` (only those), by file name."""
        files: dict[str, Path] = {}
        for image in track(ds.images, "saving images", unit="image"):
            path = self.get(image.url) if image.url else None
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


def local_file(document_root: Path, url_prefix: str) -> LocalFile:
    """Image URL -> its file below ``document_root`` (URLs ``url_prefix`` + relative path),
    or None when the URL has another form or no such file exists."""
    root = document_root.resolve()

    def find(url: str) -> Path | None:
        if not url.startswith(url_prefix):
            return None
        local = LOCAL_FILES_PATH.rstrip("/") in url
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

    def size(url: str) -> tuple[tuple[int, int], str] | None:
        for how, find in finders:
            path = find(url)
            if path is None:
                continue
            try:
                return image_hw(path), how
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                logger.warning("%s: cannot read the size of %s: %s", url, path, exc)
        return None

    return size
