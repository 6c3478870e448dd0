"""Label Studio 1.23's own folders: its upload and local-files URLs name the files it serves."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

from zerolabel.io.ls_folders import LabelStudioFolders

PHOTO = Path(__file__).resolve().parents[2] / "examples" / "voc2007" / "JPEGImages" / "000001.jpg"


def test_uploads_and_local_files_map_to_the_files_label_studio_serves(label_studio):
    ls = label_studio
    assert ls.data is not None
    project = ls.create_project("folders")
    with PHOTO.open("rb") as handle:  # a name that URLs percent-encode
        files = {"file": ("a photo é.jpg", handle, "image/jpeg")}
        ls.api("POST", f"/api/projects/{project}/import", files=files)
    folder = ls.document_root / "folders set"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "b 1.jpg")
    ls.add_local_storage(project, folder)
    local = "/data/local-files/?d=folders%20set/b%201.jpg"
    ls.api("POST", f"/api/projects/{project}/import", json=[{"data": {"image": local}}])

    tasks = ls.api("GET", f"/api/tasks?project={project}&page_size=10").json()["tasks"]
    urls = sorted(task["data"]["image"] for task in tasks)
    assert len(urls) == 2 and urls[0].startswith("/data/local-files/")
    assert urls[1].startswith(f"/data/upload/{project}/")
    folders = LabelStudioFolders(str(ls.data / "media"), str(ls.document_root))
    for url in urls:
        parts = urlsplit(url)
        path = folders.file_for(parts.path, parts.query)
        assert path is not None, url
        served = ls.api("GET", url).content  # what Label Studio sends a token holder
        assert path.read_bytes() == served == PHOTO.read_bytes()
