"""What gets installed: two uniquely named packages, one dependency direction.

The wheels of both distributions are built here (hatchling, no network: the build backend is
already installed) and their file lists read; the import graph is read from the sources.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "worker" / "zerolabel"
BACKEND = ROOT / "backend" / "zerolabel_backend"


def _build_wheel(project: Path, out: Path) -> Path:
    code = (
        "import sys, os; from hatchling.build import build_wheel; "
        "os.chdir(sys.argv[1]); print(build_wheel(sys.argv[2]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(project), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    out = tmp_path_factory.mktemp("wheels")
    tops: dict[str, set[str]] = {}
    for name, project in (("zerolabel", ROOT), ("zerolabel-backend", ROOT / "backend")):
        with zipfile.ZipFile(_build_wheel(project, out)) as wheel:
            tops[name] = {
                entry.split("/")[0]
                for entry in wheel.namelist()
                if not entry.split("/")[0].endswith(".dist-info")
            }
    return tops


def test_wheels_install_only_product_named_packages(wheels):
    assert wheels == {"zerolabel": {"zerolabel"}, "zerolabel-backend": {"zerolabel_backend"}}


def test_a_foreign_backend_or_worker_package_does_not_shadow_zerolabel(tmp_path):
    for name in ("backend", "worker"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('foreign package')\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import zerolabel.contract, zerolabel.queue.dispatch, zerolabel_backend.app; "
        "print(zerolabel.contract.__file__); print(zerolabel_backend.app.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    library_file, backend_file = done.stdout.split()
    assert Path(library_file).is_relative_to(LIBRARY)
    assert Path(backend_file).is_relative_to(BACKEND)


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_library_never_imports_the_backend():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in _imported_modules(path) if m.split(".")[0] == "zerolabel_backend"
        )
        for path in LIBRARY.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_nothing_imports_the_old_package_names():
    for path in [*LIBRARY.rglob("*.py"), *BACKEND.rglob("*.py")]:
        old = {m for m in _imported_modules(path) if m.split(".")[0] in ("backend", "worker")}
        assert not old, f"{path.relative_to(ROOT)} imports {sorted(old)}"


def test_the_backend_stack_is_maintained_flask_and_werkzeug_without_label_studio_ml():
    """label-studio-ml 1.0.9 pinned Flask 1.1.2 / Werkzeug 2.0.2 (CVE-2023-25577, CVE-2023-46136,
    CVE-2023-23934, CVE-2023-30861); the backend speaks the protocol itself on current releases."""
    import tomllib
    from importlib.metadata import version

    declared = tomllib.loads((ROOT / "backend" / "pyproject.toml").read_text())["project"]
    requirements = " ".join(declared["dependencies"]).lower()
    assert "label-studio-ml" not in requirements
    assert "flask>=3.1" in requirements and "werkzeug>=3.1" in requirements

    def release(name: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version(name).split(".")[:2])

    assert release("flask") >= (3, 1) and release("werkzeug") >= (3, 1)
