"""Package boundaries: the backend runs without torch; every module imports."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import zerolabel
import zerolabel_backend

ROOT = Path(__file__).resolve().parents[2]

_BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "timm", "torchvision"):
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Block())
"""


@pytest.mark.parametrize(
    "module",
    [
        "zerolabel_backend.wsgi",
        "zerolabel_backend.app",
        "zerolabel.loop.prelabel",
        "zerolabel.formats.export",
        "zerolabel.labelstudio.client",
        "zerolabel.queue.dispatch",
        "zerolabel.contract",
        "zerolabel.io.fetch",
        "zerolabel.cli.main",
        "zerolabel.cli.loop",
    ],
)
def test_backend_side_imports_without_torch(module):
    code = _BLOCK_TORCH + f"import {module}\nassert 'torch' not in sys.modules\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert done.returncode == 0, done.stderr


def test_contract_uses_the_standard_library_only():
    code = (
        "import sys; import zerolabel.contract; print(sorted(m.split('.')[0] for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    loaded = set(eval(done.stdout))  # noqa: S307 (our own printed list)
    assert not loaded & {"numpy", "torch", "redis", "rq", "PIL", "requests"}


def test_every_module_imports():
    for package in (zerolabel, zerolabel_backend):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)


def test_method_names_match_the_contract():
    from zerolabel.contract import FEATURE_METHODS, METHOD_NAMES
    from zerolabel.discovery import METHODS

    assert tuple(METHODS) == FEATURE_METHODS and set(METHOD_NAMES) == {*METHODS, "cad"}
