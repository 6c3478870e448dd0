"""Model files a project names: detectors and fitted files in one shared folder, by file name.

Backend, workers and the command line share a models folder (``ZEROLABEL_MODELS_DIR``). A
project's Extra params name a file of it (``{"method": "cad", "detector": "cad-<digest>.pt"}``,
``{"method": "rps", "fitted": "rps-<digest>.pt"}``); the name goes into the spec, so each file
is a model_version of its own, and workers load the file when a job first asks for it.

A project may also name backbone weights ``zerolabel adapt`` wrote
(``{"checkpoint": "adapted-<digest>.pth"}``), served instead of ``ZEROLABEL_CHECKPOINT``.

A name comes from a request, so it is checked where it enters: a bare file name of the form the
commands write (``cad-`` and the first 10 hex digits of the file's SHA-256 for a detector,
``<kind>-`` and a 12-digit digest of its content for a fitted file, see :mod:`zerolabel.fitted`,
``adapted-`` and the first 12 hex digits of the file's SHA-256 for adapted weights), and the
file must be a regular file inside the folder once links are resolved. Standard library only:
the backend checks names too.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from zerolabel.errors import ConfigError, WeightsError

MODELS_DIR_SETTING = "ZEROLABEL_MODELS_DIR"

DETECTOR_NAME = re.compile(r"cad-(?P<digest>[0-9a-f]{10})\.pt")
"""What ``zerolabel train-cad`` and ``self-train`` call the detectors they export."""

FITTED_NAME = re.compile(
    r"(?P<kind>[a-z][a-z0-9]*(?:-[a-z][a-z0-9]*)*)-(?P<digest>[0-9a-f]{12})\.pt"
)
"""What ``zerolabel rps-fit`` and ``train-found`` call their files: ``<kind>-<digest>.pt``."""

CHECKPOINT_NAME = re.compile(r"adapted-(?P<digest>[0-9a-f]{12})\.pth")
"""What ``zerolabel adapt`` calls the backbone weights it writes."""

_LISTED = 20  # files named in a message, at most
_CHUNK = 1 << 20


def check_detector_name(name: object) -> str:
    """``name`` when it is a detector's file name (``cad-<10 hex digits>.pt``).

    Raises:
        ConfigError: anything else (a path, another form, not a string).
    """
    return _bare_name(
        name,
        DETECTOR_NAME,
        f"detector {name!r} is not a detector's file name",
        "cad-<10 hex digits>.pt that zerolabel train-cad wrote",
    )


def check_fitted_name(name: object, kind: str | None = None) -> str:
    """``name`` when it is a fitted file's name (``<kind>-<12 hex digits>.pt``).

    Args:
        name: the name to check.
        kind: the fitted kind the name must have (None: any).

    Raises:
        ConfigError: anything else, or a file of another kind.
    """
    match = FITTED_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ConfigError(
            f"fitted file {name!r} is not a fitted file's name: give the bare name "
            "<kind>-<12 hex digits>.pt that zerolabel rps-fit or train-found wrote (no folder), "
            f"of a file in {MODELS_DIR_SETTING}"
        )
    if kind is not None and match.group("kind") != kind:
        raise ConfigError(
            f"fitted file {name!r} holds a {match.group('kind')!r} fit, but the method reads "
            f"{kind!r} fits ({kind}-<digest>.pt)"
        )
    return str(name)


def check_checkpoint_name(name: object) -> str:
    """``name`` when it is the name of adapted weights (``adapted-<12 hex digits>.pth``).

    Raises:
        ConfigError: anything else (a path, another form, not a string).
    """
    return _bare_name(
        name,
        CHECKPOINT_NAME,
        f"checkpoint {name!r} is not the name of adapted weights",
        "adapted-<12 hex digits>.pth that zerolabel adapt wrote",
    )


def _bare_name(name: object, form: re.Pattern[str], problem: str, expected: str) -> str:
    """``name`` when it has ``form``; else a ConfigError: ``problem``, then what to give."""
    if not isinstance(name, str) or form.fullmatch(name) is None:
        raise ConfigError(
            f"{problem}: give the bare name {expected} (no folder), of a file in "
            f"{MODELS_DIR_SETTING}"
        )
    return name


def locate(folder: str | Path, name: str, what: str) -> Path:
    """The file ``name`` in ``folder``: a regular file inside it once links are resolved.

    Args:
        folder: the models folder.
        name: a name checked by :func:`check_detector_name` or :func:`check_fitted_name`.
        what: "detector" or "fitted file", for messages and the files they list.

    Raises:
        ConfigError: the folder or the file does not exist (the message names the folder and
            the files of that kind it holds), or the name leads out of the folder or to
            something that is not a regular file.
    """
    if os.sep in name or (os.altsep and os.altsep in name) or name in ("", ".", ".."):
        raise ConfigError(f"{what} {name!r} must be a bare file name, without a folder")
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(
            f"{MODELS_DIR_SETTING}={str(folder)!r} is not a folder, so {what} {name!r} cannot "
            "be loaded: create it (zerolabel use fills it) and give backend and workers the same"
        )
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(root / name))
    if real.parent != real_root:
        raise ConfigError(f"{what} {name!r} leads out of {MODELS_DIR_SETTING} ({folder})")
    try:
        mode = real.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(missing(folder, name, what)) from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{what} {name!r} in {folder} is not a regular file")
    return real


def missing(folder: str | Path, name: str, what: str) -> str:
    """The message for a model file that is not in the folder: what the folder holds."""
    held = available(folder, what)
    listed = ", ".join(held[:_LISTED])
    if len(held) > _LISTED:
        listed += f" and {len(held) - _LISTED} more"
    install = (
        "copy the file zerolabel adapt wrote into it"
        if what == "checkpoint"
        else f"install it with zerolabel use --project ID METHOD --{what.split()[0]} FILE"
    )
    return (
        f"{what} {name!r} is not in {MODELS_DIR_SETTING} ({folder}), which holds "
        f"{listed or f'no {what}'}: {install}, or give backend and workers the same "
        f"{MODELS_DIR_SETTING}"
    )


def available(folder: str | Path, what: str) -> list[str]:
    """The names of the detectors (``what`` "detector"), adapted weights ("checkpoint") or
    fitted files in ``folder``, sorted."""
    patterns = {"detector": DETECTOR_NAME, "checkpoint": CHECKPOINT_NAME}
    pattern = patterns.get(what, FITTED_NAME)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(name for name in names if pattern.fullmatch(name))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, in hex."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(chunk)
    return sha.hexdigest()


def check_detector_bytes(path: Path) -> None:
    """A detector of the models folder holds the bytes its name names (a renamed or changed
    file would serve other weights under the name's model_version).

    Raises:
        WeightsError: the digest of its bytes is not the one in its name.
    """
    match = DETECTOR_NAME.fullmatch(path.name)
    digest = file_digest(path)
    if match is None or not digest.startswith(match.group("digest")):
        raise WeightsError(
            f"detector {path.name} in {path.parent} is not the file its name names (its bytes "
            f"give cad-{digest[:10]}.pt): it was renamed or changed; install the detector again "
            "with zerolabel use"
        )


def check_checkpoint_bytes(path: Path) -> None:
    """Adapted weights of the models folder hold the bytes their name names (a renamed or
    changed file would serve other weights under the name's model_version).

    Raises:
        WeightsError: the digest of its bytes is not the one in its name.
    """
    match = CHECKPOINT_NAME.fullmatch(path.name)
    digest = file_digest(path)
    if match is None or not digest.startswith(match.group("digest")):
        raise WeightsError(
            f"checkpoint {path.name} in {path.parent} is not the file its name names (its bytes "
            f"give adapted-{digest[:12]}.pth): it was renamed or changed; copy the file "
            "zerolabel adapt wrote again"
        )
