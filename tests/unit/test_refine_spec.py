"""Refinement as a spec choice: per-method defaults, model versions, project options, CLI."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from zerolabel import methods
from zerolabel.cli.main import main
from zerolabel.contract import DiscoverySpec
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.settings import BackendSettings


def test_the_multi_object_methods_refine_by_default_single_object_ones_do_not_cad_cannot():
    assert {name: info.refine_default for name, info in methods.METHODS.items()} == {
        "lost": False,
        "tokencut": False,
        "maskcut": True,
        "cad": None,
        "found": False,
        "rps": False,
        "dinoseg": False,
        "dss": False,
        "promerge": True,
    }
    assert DiscoverySpec(method="maskcut").effective_refine() is True
    assert DiscoverySpec(method="maskcut", refine=False).effective_refine() is False
    assert DiscoverySpec(method="lost").effective_refine() is False
    assert DiscoverySpec(method="lost", refine=True).effective_refine() is True


def test_refinement_is_refused_for_a_detector_and_must_be_a_bool():
    with pytest.raises(ConfigError, match="method 'cad' gives pixel masks already"):
        DiscoverySpec(method="cad", backbone="cad", weights="cad.pt", refine=True)
    assert not DiscoverySpec(method="cad", backbone="cad", weights="c.pt").effective_refine()
    with pytest.raises(ConfigError, match="refine must be true, false or None, got 'yes'"):
        DiscoverySpec(method="maskcut", refine="yes")  # type: ignore[arg-type]


def test_the_model_version_follows_the_effective_refinement():
    default = DiscoverySpec(method="maskcut")
    assert DiscoverySpec(method="maskcut", refine=True).model_version() == default.model_version()
    assert DiscoverySpec(method="maskcut", refine=False).model_version() != default.model_version()
    lost = DiscoverySpec(method="lost")
    assert DiscoverySpec(method="lost", refine=False).model_version() == lost.model_version()
    assert DiscoverySpec(method="lost", refine=True).model_version() != lost.model_version()
    spec = DiscoverySpec(method="lost", refine=True)
    assert DiscoverySpec.from_dict(spec.to_dict()) == spec  # the field crosses Redis


def test_a_project_switches_refinement_with_a_bool_option():
    settings = BackendSettings()
    options = ProjectOptions.parse({"method": "maskcut", "refine": False})
    assert options.spec(settings, masks=True).refine is False
    assert ProjectOptions.parse({"method": "maskcut"}).spec(settings, masks=True).refine is None
    with pytest.raises(ConfigError, match='extra param "refine" must be true or false'):
        ProjectOptions.parse({"refine": "no"})


def test_predict_help_names_the_switch_and_cad_refuses_it(tmp_path, monkeypatch):
    help_text = CliRunner().invoke(main, ["predict", "--help"]).output
    assert "--refine / --no-refine" in help_text
    checkpoint = tmp_path / "cad.pt"
    checkpoint.write_bytes(b"")
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    args = ["predict", str(image), "-m", "cad", "--cad-checkpoint", str(checkpoint), "--refine"]
    result = CliRunner().invoke(main, args, env={"ZEROLABEL_DEVICE": "cpu"})
    assert result.exit_code == 1
    assert "Error: method 'cad' gives pixel masks already" in result.output
