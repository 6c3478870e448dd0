"""Package boundaries: the backend runs without torch; every module imports."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import zerolabel
import zerolabel_backend

ROOT = Path(__file__).resolve().parents[2]
# Subprocesses import this checkout (not whatever copy is installed), like pytest does.
_PYTHONPATH = os.pathsep.join(str(ROOT / part) for part in ("worker", "backend", "."))

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
        "zerolabel.methods",
        "zerolabel.settings",
        "zerolabel.queue.service",
        "zerolabel.labelstudio.options",
        "zerolabel.labelstudio.tasks",
        "zerolabel.labelstudio.label_config",
    ],
)
def test_backend_side_imports_without_torch(module):
    code = _BLOCK_TORCH + f"import {module}\nassert 'torch' not in sys.modules\n"
    done = _run(code)
    assert done.returncode == 0, done.stderr


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "PYTHONPATH": _PYTHONPATH,
            **env,
        },
    )


def test_every_labelstudio_module_imports_without_torch():
    import zerolabel.labelstudio

    names = [info.name for info in pkgutil.iter_modules(zerolabel.labelstudio.__path__)]
    assert {"client", "label_config", "options", "tasks"} <= set(names)
    imports = "".join(f"import zerolabel.labelstudio.{name}\n" for name in names)
    done = _run(_BLOCK_TORCH + imports + "assert 'torch' not in sys.modules\n")
    assert done.returncode == 0, done.stderr


def test_the_cad_package_imports_no_detector_code_until_a_name_is_used():
    code = (
        "import sys, zerolabel.cad as cad\n"
        "heavy = ('torch', 'torchvision', 'pycocotools')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in heavy], 'eager import'\n"
        "assert cad.CadConfig(masks=False).masks is False\n"
        "assert 'torchvision' not in sys.modules\n"
        "assert all(getattr(cad, name) is not None for name in cad.__all__)\n"
        "assert 'torchvision.models.detection' in sys.modules\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr


def test_a_lost_worker_never_imports_the_detector(dino_checkpoint):
    """A LOST worker built from its settings runs an image without importing the detector's
    code (zerolabel.cad.model, .inference, .data, .training) or pycocotools.

    torchvision.models.detection itself cannot be kept out: ``import timm`` imports
    torchvision.models.feature_extraction, and torchvision's package initialisation imports
    every torchvision.models subpackage, detection included. The check below shows that it
    comes from there and from nothing of ours.
    """
    image = ROOT / "examples" / "voc2007" / "JPEGImages" / "000001.jpg"
    code = (
        "import sys\n"
        "from zerolabel.contract import DiscoveryRequest\n"
        "from zerolabel.queue.runtime import WorkerRuntime\n"
        "from zerolabel.settings import WorkerSettings\n"
        "settings = WorkerSettings.from_env()\n"
        "runtime = WorkerRuntime(settings)\n"
        f"result = runtime.discover(DiscoveryRequest(settings.spec(), {str(image)!r}))\n"
        "assert result.error is None and result.regions, result\n"
        "ours = [m for m in sys.modules if m.startswith('zerolabel.cad.')]\n"
        "assert not ours and 'pycocotools' not in sys.modules, ours\n"
        "import subprocess\n"
        "probe = 'import sys, timm; print(\"torchvision.models.detection\" in sys.modules)'\n"
        "timm_alone = subprocess.run([sys.executable, '-c', probe], capture_output=True,"
        " text=True)\n"
        "print(result.regions[0].method, 'torchvision.models.detection' in sys.modules,"
        " timm_alone.stdout.strip())\n"
    )
    done = _run(
        code,
        ZEROLABEL_METHOD="lost",
        ZEROLABEL_BACKBONE="vit_small_patch16_224",
        ZEROLABEL_BACKBONE_KWARGS='{"depth": 2}',
        ZEROLABEL_CHECKPOINT=str(dino_checkpoint),
        ZEROLABEL_OFFLINE="1",
        ZEROLABEL_DEVICE="cpu",
        ZEROLABEL_LOCAL_ROOTS=str(image.parent),
    )
    assert done.returncode == 0, done.stderr
    method, worker_has_detection, timm_alone_has_it = done.stdout.split()
    assert method == "lost"
    assert worker_has_detection == "False" or timm_alone_has_it == "True"  # only through timm


def test_contract_uses_the_standard_library_only():
    code = (
        "import sys; import zerolabel.contract; print(sorted(m.split('.')[0] for m in sys.modules))"
    )
    done = _run(code)
    loaded = set(eval(done.stdout))  # noqa: S307 (our own printed list)
    assert not loaded & {"numpy", "torch", "redis", "rq", "PIL", "requests"}


def test_every_module_imports():
    for package in (zerolabel, zerolabel_backend):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)


def test_method_names_match_the_contract():
    from zerolabel.contract import FEATURE_METHODS, METHOD_NAMES
    from zerolabel.discovery import FUNCTIONS

    assert tuple(FUNCTIONS) == FEATURE_METHODS and set(METHOD_NAMES) == {*FUNCTIONS, "cad"}


def test_the_registry_and_contract_use_the_standard_library_only():
    code = (
        "import sys; import zerolabel.methods, zerolabel.contract; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    loaded = set(eval(_run(code).stdout))  # noqa: S307 (our own printed list)
    assert not loaded & {"numpy", "torch", "redis", "rq", "PIL", "requests", "click"}
