"""Long commands are never silent off a terminal: ``predict`` and ``eval -m`` (tiny random ViT,
click's runner, which is no terminal) log the model load and progress lines with rate and ETA."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from zerolabel import progress
from zerolabel.cli.main import main

VOC = Path(__file__).resolve().parents[2] / "examples" / "voc2007"
STEMS = ("000001", "000004", "000032")


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    for sub in ("Annotations", "JPEGImages"):
        (tmp_path / sub).mkdir()
    for stem in STEMS:
        shutil.copy(VOC / "Annotations" / f"{stem}.xml", tmp_path / "Annotations")
        shutil.copy(VOC / "JPEGImages" / f"{stem}.jpg", tmp_path / "JPEGImages")
    return tmp_path


@pytest.fixture
def logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    """Progress messages; a line after every finished image (interval 0) so a short run shows
    what a long one shows every few seconds."""
    monkeypatch.setattr(progress, "DEFAULT_INTERVAL_S", 0.0)
    caplog.set_level(logging.INFO, logger="zerolabel.progress")
    return caplog


def _model_load(messages: list[str], method: str) -> None:
    start = f"loading {method} (model vit_small_patch16_224 on cpu) ..."
    assert messages.count(start) == 1, messages
    ended = [m for m in messages if m.startswith(f"{start} ready in ")]
    assert len(ended) == 1 and messages.index(start) < messages.index(ended[0])


def _counted(messages: list[str], desc: str, total: int) -> list[str]:
    """The periodic lines of ``desc``: each names done/total, rate, elapsed time and ETA."""
    lines = [m for m in messages if m.startswith(f"{desc}: ") and ", elapsed " in m]
    pattern = rf"{desc}: (\d+)/{total} images \(\d+%\), (.+ images/s|.+ s/image), elapsed .+"
    done = []
    for line in lines:
        match = re.fullmatch(pattern, line)
        if match is None:
            continue
        done.append(int(match.group(1)))
        assert "ETA" in line or match.group(1) == "0"
    return sorted(set(done))


def test_predict_logs_the_model_load_and_progress_lines(tiny_env, voc, tmp_path, logged):
    images = [str(voc / "JPEGImages" / f"{stem}.jpg") for stem in STEMS]
    result = CliRunner().invoke(
        main, ["predict", *images, "-o", str(tmp_path / "out")], env=tiny_env
    )
    assert result.exit_code == 0, result.output
    messages = logged.messages
    _model_load(messages, "lost")
    assert _counted(messages, "pre-labeling", 3) == [1, 2, 3]
    end = [m for m in messages if m.startswith("pre-labeling: 3/3 images (100%) in ")]
    assert len(end) == 1
    assert "pre-labeling" not in result.output  # no bar drawn where there is no terminal


def test_eval_methods_logs_each_method_per_image(tiny_env, voc, logged):
    result = CliRunner().invoke(
        main,
        ["eval", "--gt", str(voc / "Annotations"), "--images", str(voc / "JPEGImages")]
        + ["-m", "lost", "-m", "dss"],
        env={**tiny_env, "ZEROLABEL_MAX_SIDE": "224"},
    )
    assert result.exit_code == 0, result.output
    messages = logged.messages
    for method in ("lost", "dss"):
        _model_load(messages, method)
        assert _counted(messages, f"eval {method}", 3) == [1, 2, 3]
        assert any(m.startswith(f"eval {method}: 3/3 images (100%) in ") for m in messages)
