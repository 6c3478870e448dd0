"""Label Studio's own image folders, mounted where a worker runs: read from disk, not over HTTP.

Label Studio keeps uploaded files in ``<media>/upload/<project>/<file>`` (``<media>`` is
``$LABEL_STUDIO_BASE_DATA_DIR/media``) and serves them at ``/data/upload/<project>/<file>``;
it serves local-files storage at ``/data/local-files/?d=<path>``, ``<path>`` relative to its
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``. Each such download costs Label Studio a full
request (authentication, database look-ups) of CPU time. A worker on the same machine or volume
can be given those folders (``ZEROLABEL_LABEL_STUDIO_MEDIA``, ``ZEROLABEL_LABEL_STUDIO_FILES``)
and reads the file itself.

Only image paths of the configured Label Studio are mapped (the fetcher's
:class:`~zerolabel.sites.Destinations` tells them apart), and only to a regular file inside the
given folder after symbolic links are resolved; a URL that maps to nothing there (a malformed
name, a file kept elsewhere, e.g. in cloud storage) is downloaded as before. Whoever can send
``/predict`` requests can have any file of these folders run through discovery (the regions, not
the pixels, come back): mount them only where every caller of the backend may see every project.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote

from zerolabel.errors import ConfigError
from zerolabel.sites import LOCAL_FILES_PATH, UPLOAD_PATH

MEDIA_SETTING = "ZEROLABEL_LABEL_STUDIO_MEDIA"
FILES_SETTING = "ZEROLABEL_LABEL_STUDIO_FILES"


@dataclass(frozen=True)
class LabelStudioFolders:
    """Where a worker finds Label Studio's files on disk.

    Attributes:
        media: Label Studio's media folder (uploads are in its ``upload/``); None: download.
        files_root: Label Studio's local-files document root; None: download.
    """

    media: str | None = None
    files_root: str | None = None

    def check(self) -> None:
        """Refuse folders that do not exist (at start, naming the setting).

        Raises:
            ConfigError: a folder is not a directory.
        """
        for setting, folder in ((MEDIA_SETTING, self.media), (FILES_SETTING, self.files_root)):
            if folder is not None and not os.path.isdir(folder):
                raise ConfigError(f"{setting}={folder!r} is not a folder this process can read")

    def __bool__(self) -> bool:
        return self.media is not None or self.files_root is not None

    def file_for(self, path: str, query: str) -> Path | None:
        """The file a Label Studio image URL names, or None to download it.

        Args:
            path: the URL's percent-encoded path below the site's base path
                (``/data/upload/...`` or ``/data/local-files/``).
            query: its percent-encoded query string.
        """
        if path.startswith(UPLOAD_PATH) and self.media is not None and not query:
            project, _, name = unquote(path.removeprefix(UPLOAD_PATH)).partition("/")
            if not project.isdigit() or not _plain(name) or "/" in name:
                return None
            return _inside(os.path.join(self.media, "upload"), os.path.join(project, name))
        if path == LOCAL_FILES_PATH and self.files_root is not None:
            values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "d"]
            if len(values) != 1 or not _plain(values[0]):
                return None
            return _inside(self.files_root, values[0].lstrip("/"))
        return None


def _plain(relative: str) -> bool:
    """A relative path without empty, ``.`` or ``..`` segments, backslashes or control
    characters."""
    segments = relative.strip("/").split("/")
    return (
        bool(relative)
        and relative.isprintable()
        and "\\" not in relative
        and all(s not in ("", ".", "..") for s in segments)
    )


def _inside(root: str, relative: str) -> Path | None:
    """``root/relative`` when, links resolved, it is a regular file inside ``root``."""
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, path]) != base or not os.path.isfile(path):
        return None
    return Path(path)
