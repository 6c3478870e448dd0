"""A real Label Studio 1.23 server on 127.0.0.1 (own virtual environment, see .ci/run)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.ls_server import LabelStudio, label_studio_binary, label_studio_server


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[LabelStudio]:
    binary = label_studio_binary()
    if binary is None:
        if os.environ.get("ZEROLABEL_REQUIRE_E2E"):
            pytest.fail("ZEROLABEL_REQUIRE_E2E is set but no Label Studio server is installed")
        pytest.skip("Label Studio is not installed: set ZEROLABEL_LS_BIN (see .ci/run)")
    data = tmp_path_factory.mktemp("label-studio")
    root = tmp_path_factory.mktemp("documents")
    with label_studio_server(binary, data, root) as server:
        yield server
