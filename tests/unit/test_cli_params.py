"""``zerolabel predict -p``: parameters typed and checked by the registry before a model loads."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from zerolabel.cli.common import parse_params
from zerolabel.cli.main import main
from zerolabel.errors import ConfigError


def test_values_are_typed_by_the_methods_registered_types():
    parsed = parse_params(("k_patches=50",), "lost")
    assert parsed == {"k_patches": 50} and isinstance(parsed["k_patches"], int)
    parsed = parse_params(("tau=1", "max_objects=2"), "maskcut")
    assert parsed == {"tau": 1.0, "max_objects": 2} and isinstance(parsed["tau"], float)


def test_unknown_ill_typed_and_malformed_parameters_are_refused():
    with pytest.raises(ConfigError, match=r"no parameter 'tua'.*tau \(float.*eps \(float"):
        parse_params(("tua=0.2",), "tokencut")
    with pytest.raises(ConfigError, match="'k_patches' of method 'lost' must be an int"):
        parse_params(("k_patches=lots",), "lost")
    with pytest.raises(click.BadParameter, match="is not key=value"):
        parse_params(("k_patches",), "lost")


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("zerolabel.pipeline.load_backbone", refuse)
    monkeypatch.setattr("zerolabel.cad.model.load_detector", refuse)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        pytest.param(["-m", "tokencut", "-p", "tua=0.2"], ["tau (float", "eps (float"], id="typo"),
        pytest.param(
            ["-m", "lost", "-p", "k_patches=0"], ["k_patches (int in [1, 4096]"], id="range"
        ),
        pytest.param(
            ["-m", "cad", "--cad-checkpoint", "cad.pt", "-p", "max_detections=many"],
            ["score_threshold (float", "max_detections (int"],
            id="detector",
        ),
    ],
)
def test_predict_fails_with_one_line_naming_the_parameters(no_model_loads, tmp_path, args, names):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    result = CliRunner().invoke(
        main, ["predict", str(image), "-o", str(tmp_path / "out"), *args], env={}
    )
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert all(name in lines[0] for name in names)
    assert not (tmp_path / "out").exists()


def test_a_zero_batch_size_is_refused_at_start(no_model_loads, tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    result = CliRunner().invoke(main, ["predict", str(image), "--batch-size", "0"], env={})
    assert result.exit_code == 1 and "must be at least 1, got 0" in result.output
