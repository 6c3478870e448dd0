"""zerolabel use without servers: files installed atomically by content, connections' Extra
params rewritten (model keys replaced, the rest kept), refusals, and prelabel's option source."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import stat
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import torch
from click.testing import CliRunner
from zerolabel.cad.model import CHECKPOINT_FORMAT
from zerolabel.cli.main import main
from zerolabel.errors import ConfigError, LabelStudioError, WeightsError
from zerolabel.fitted import Fitted, save_fitted
from zerolabel.labelstudio.client import LabelStudioClient
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.loop.backend_options import NO_CONNECTION, choose_options, explain_options
from zerolabel.loop.use_model import (
    install_detector,
    install_fitted,
    model_source,
    project_connections,
    switch_project,
)
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings

CONFIG = (Path(__file__).resolve().parents[2] / "examples" / "label_config.xml").read_text()
LEGACY = "0123456789abcdef0123456789abcdef01234567"


class FakeLabelStudio:
    """Connections and a project as Label Studio 1.23 keeps them; PATCHes recorded."""

    def __init__(self, *extra_params: Any) -> None:
        self.connections = [
            {
                "id": n + 1,
                "project": 3,
                "title": f"backend{n}",
                "url": "http://backend:9090",
                "auth_method": "NONE",
                "extra_params": extra,
            }
            for n, extra in enumerate(extra_params)
        ]
        self.patched: list[tuple[int, dict[str, Any]]] = []
        self.versions_known: set[str] = set()  # versions some prediction carries
        self.model_version = "backend0"
        self.refuse: str | None = None  # the backend's /setup error

    def ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        return [dict(c) for c in self.connections]

    def label_config(self, project_id: int) -> str:
        return CONFIG

    def update_ml_backend(self, connection: dict[str, Any], extra: dict[str, Any]) -> Any:
        if self.refuse:
            raise LabelStudioError(400, "PATCH", f"/api/ml/{connection['id']}", self.refuse)
        self.patched.append((connection["id"], extra))
        return {**connection, "extra_params": extra}

    def project(self, project_id: int) -> dict[str, Any]:
        return {"id": project_id, "model_version": self.model_version}

    def request(self, method: str, path: str, *, json: Any = None, **kwargs: Any) -> Any:
        assert (method, path) == ("PATCH", "/api/projects/3")
        if json["model_version"] not in self.versions_known:
            raise LabelStudioError(400, method, path, "Model version doesn't exist")
        self.model_version = json["model_version"]
        return self.project(3)


@pytest.fixture
def service(tmp_path) -> PredictionService:
    (tmp_path / "models").mkdir()
    settings = BackendSettings.from_env({"ZEROLABEL_MODELS_DIR": str(tmp_path / "models")})
    return PredictionService(settings, redis=fakeredis.FakeRedis())


def _version(service: PredictionService, extra: dict[str, Any]) -> str:
    return service.model_version(CONFIG, ProjectOptions.parse(extra))


# --- connections -------------------------------------------------------------------------------


def test_the_model_keys_are_replaced_and_the_others_kept_on_every_connection(service):
    ls = FakeLabelStudio(
        {"method": "maskcut", "tau": 0.3, "masks": False, "label": "object"},
        '{"method": "tokencut", "masks": false, "label": "object"}',  # stored as text: same keys
    )
    connections = project_connections(ls, 3)
    assert connections.kept == {"masks": False, "label": "object"}
    switch = switch_project(ls, service, connections, {"method": "lost", "k_patches": 50})
    wanted = {"masks": False, "label": "object", "method": "lost", "k_patches": 50}
    assert ls.patched == [(1, wanted), (2, wanted)]
    assert switch.extra_params == wanted and switch.connections == [
        "'backend0' (http://backend:9090)",
        "'backend1' (http://backend:9090)",
    ]
    assert switch.model_version == _version(service, wanted)
    assert switch.model_version.startswith("zerolabel-lost-")


def test_the_project_version_follows_only_once_label_studio_knows_it(service, caplog):
    ls = FakeLabelStudio({"method": "maskcut"})
    with caplog.at_level(logging.INFO):
        switch = switch_project(ls, service, project_connections(ls, 3), {"method": "lost"})
    assert not switch.project_version and ls.model_version == "backend0"
    assert "zerolabel prelabel --project 3 makes it the project's model version" in caplog.text
    assert "WARNING" not in caplog.text
    ls.versions_known.add(switch.model_version)  # e.g. switching back to an earlier model
    again = switch_project(ls, service, project_connections(ls, 3), {"method": "lost"})
    assert again.project_version and ls.model_version == switch.model_version


def test_a_project_without_a_connection_or_with_disagreeing_ones_is_refused(service):
    with pytest.raises(ConfigError, match="project 3 has no ML backend connection: connect"):
        project_connections(FakeLabelStudio(), 3)
    two = FakeLabelStudio({"label": "car"}, {"label": "dog", "method": "lost"})
    with pytest.raises(ConfigError) as raised:
        project_connections(two, 3)
    message = str(raised.value)
    assert "have different Extra params besides the model" in message
    assert '\'backend0\' (http://backend:9090) keeps {"label": "car"}' in message
    assert two.patched == []


def test_options_that_cannot_be_served_change_nothing(service):
    ls = FakeLabelStudio({"method": "maskcut"})
    connections = project_connections(ls, 3)
    with pytest.raises(ConfigError, match="is not in ZEROLABEL_MODELS_DIR"):
        switch_project(ls, service, connections, {"method": "cad", "detector": "cad-0123456789.pt"})
    with pytest.raises(ConfigError, match="method .lost. has no parameter .tau."):
        switch_project(ls, service, connections, {"method": "lost", "tau": "x"})
    assert ls.patched == []


def test_a_backend_that_refuses_the_extra_params_is_named_with_its_reason(service):
    ls = FakeLabelStudio({"method": "maskcut"})
    ls.refuse = "Successfully connected to http://backend:9090 ... Reason: no such detector."
    with pytest.raises(ConfigError) as raised:
        switch_project(ls, service, project_connections(ls, 3), {"method": "lost"})
    message = str(raised.value)
    assert "did not change ML backend connection 'backend0' (http://backend:9090)" in message
    assert "no such detector" in message


def test_the_patch_carries_what_label_studio_checks_and_keeps_the_stored_password(monkeypatch):
    calls: list[tuple[str, str, Any]] = []

    def request(method: str, path: str, **kwargs: Any) -> Any:
        calls.append((method, path, kwargs["json"]))
        return {"id": 5, "model_version": "v"}

    basic = {"id": 5, "project": 3, "url": "http://b:9090", "auth_method": "BASIC_AUTH"}
    with LabelStudioClient("http://ls.test:8080", LEGACY) as client:
        monkeypatch.setattr(client, "request", request)
        client.update_ml_backend({**basic, "basic_auth_user": "ls"}, {"method": "lost"})
        client.update_ml_backend({**basic, "auth_method": "NONE"}, {"method": "lost"})
    assert calls == [
        (
            "PATCH",
            "/api/ml/5",
            {
                "url": "http://b:9090",
                "project": 3,
                "auth_method": "BASIC_AUTH",
                "extra_params": {"method": "lost"},
                "basic_auth_user": "ls",
                "basic_auth_pass": "",
            },
        ),
        (
            "PATCH",
            "/api/ml/5",
            {
                "url": "http://b:9090",
                "project": 3,
                "auth_method": "NONE",
                "extra_params": {"method": "lost"},
            },
        ),
    ]


# --- installing files --------------------------------------------------------------------------


def _detector(path: Path, *, optimizer: bool = False) -> Path:
    checkpoint: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "iteration": 2,
        "config": {"masks": False},
        "model": {"w": torch.arange(4.0)},
    }
    if optimizer:
        checkpoint["optimizer"] = {"state": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def test_a_detector_is_copied_in_under_the_digest_of_its_bytes_readable_by_all(tmp_path):
    source = _detector(tmp_path / "round2" / "renamed.pt")
    models = tmp_path / "models"
    name = install_detector(source, models)
    assert name == f"cad-{hashlib.sha256(source.read_bytes()).hexdigest()[:10]}.pt"
    assert (models / name).read_bytes() == source.read_bytes()
    assert stat.S_IMODE((models / name).stat().st_mode) == 0o644
    assert install_detector(models / name, models) == name  # there already: left as it is
    assert sorted(p.name for p in models.iterdir()) == [name]  # no temporary left behind


def test_a_training_checkpoint_is_installed_as_its_weights_only_export(tmp_path):
    models = tmp_path / "models"
    name = install_detector(
        _detector(tmp_path / "cad" / "checkpoint_last.pt", optimizer=True), models
    )
    assert name.startswith("cad-") and "optimizer" not in torch.load(models / name)


def test_a_file_that_is_not_a_detector_is_not_installed(tmp_path):
    foreign = tmp_path / "cad-0123456789.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(WeightsError, match="not a zerolabel CAD checkpoint"):
        install_detector(foreign, tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_a_fitted_file_is_installed_by_its_content_name_and_checked_against_the_project(
    tmp_path,
):
    fitted = Fitted("rps", "dino_vits16", "hub", {"direction": torch.ones(4)})
    source = save_fitted(fitted, tmp_path / "fit")
    moved = source.rename(tmp_path / "fit" / "my-fit.pt")
    models = tmp_path / "models"
    checks = {"kind": "rps", "backbone": "dino_vits16", "weights": "hub"}
    assert install_fitted(moved, models, **checks) == fitted.file_name()
    with pytest.raises(WeightsError, match="fitted on dino_vits16"):
        install_fitted(moved, models, **{**checks, "backbone": "dino_vits8"})
    with pytest.raises(WeightsError, match="holds a 'rps' fit, not a 'found-head' one"):
        install_fitted(moved, models, **{**checks, "kind": "found-head"})


def test_a_name_the_folder_holds_needs_no_file_here(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "cad-0123456789.pt").write_bytes(b"x")
    assert model_source("cad-0123456789.pt", str(models), "detector") == "cad-0123456789.pt"
    with pytest.raises(ConfigError, match="which holds cad-0123456789.pt"):
        model_source("cad-ffffffffff.pt", str(models), "detector")
    with pytest.raises(ConfigError, match="round2/cad-ffffffffff.pt: no such detector file"):
        model_source("round2/cad-ffffffffff.pt", str(models), "detector")


def test_the_command_refuses_files_the_method_does_not_read_before_calling_anyone(tmp_path):
    runner = CliRunner()
    env = {"ZEROLABEL_MODELS_DIR": str(tmp_path), "LABEL_STUDIO_API_KEY": ""}
    wrong = runner.invoke(main, ["use", "--project", "3", "lost", "--detector", "x.pt"], env=env)
    assert wrong.exit_code == 2 and "--detector is the detector of method cad" in wrong.output
    no_folder = runner.invoke(
        main,
        ["use", "--project", "3", "cad", "--detector", "x.pt"],
        env={"ZEROLABEL_MODELS_DIR": ""},
    )
    assert no_folder.exit_code == 2 and "--detector needs ZEROLABEL_MODELS_DIR" in no_folder.output


# --- where prelabel's options come from --------------------------------------------------------


class Connections:
    def __init__(self, *connections: dict[str, Any]) -> None:
        self.connections = list(connections)

    def ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        return self.connections


BACKEND = {"id": 1, "title": "zerolabel", "url": "http://backend:9090"}


def _explain(service, env_method: str, connections: Connections, caplog) -> str:
    settings = BackendSettings.from_env({"ZEROLABEL_METHOD": env_method})
    chosen = choose_options(connections, 3, None, lambda o: _version(service, {}))
    spec = chosen.options.spec(settings, masks=False)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        explain_options(3, chosen, spec, settings.discovery)
    return caplog.text


def test_prelabel_says_where_its_method_comes_from_and_warns_of_an_unused_one(service, caplog):
    maskcut = Connections({**BACKEND, "extra_params": {"method": "maskcut"}})
    text = _explain(service, "tokencut", maskcut, caplog)
    assert (
        "project 3: method maskcut from the Extra params of its ML backend connection "
        "'zerolabel' (http://backend:9090)" in text
    )
    assert "WARNING" in text and "ZEROLABEL_METHOD=tokencut is not used for project 3" in text
    assert "zerolabel use --project 3 METHOD" in text
    assert "WARNING" not in _explain(service, "maskcut", maskcut, caplog)


def test_the_environment_is_named_when_the_connection_names_no_method(service, caplog):
    silent = Connections({**BACKEND, "extra_params": {"masks": False}})
    text = _explain(service, "tokencut", silent, caplog)
    assert "project 3: method tokencut from ZEROLABEL_METHOD (the Extra params of its" in text
    assert "name no method" in text and "WARNING" not in text
    alone = _explain(service, "lost", Connections(), caplog)
    assert f"project 3: method lost from {NO_CONNECTION}" in alone


def test_the_command_passes_the_preset_to_the_extra_params(monkeypatch):
    from zerolabel.cli import use as use_command

    switched: list[dict] = []

    def switch(client, service, connections, model):
        switched.append(model)
        raise ConfigError("stop here")

    monkeypatch.setattr(use_command, "ls_client", lambda settings: contextlib.nullcontext(None))
    monkeypatch.setattr("zerolabel.loop.use_model.project_connections", lambda c, p: None)
    monkeypatch.setattr("zerolabel.loop.use_model.switch_project", switch)
    result = CliRunner().invoke(
        main, ["use", "--project", "3", "dss", "--preset", "paper"], env={"REDIS_URL": ""}
    )
    assert result.exit_code == 1 and "stop here" in result.output
    assert switched == [{"method": "dss", "preset": "paper"}]
