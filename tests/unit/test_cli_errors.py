"""Every command fails on bad input with one ``Error:`` line, a non-zero exit and no traceback.

No model is loaded: each input fails before (bad settings, files, options), or at a server that
refuses connections on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket

import click
import pytest
import requests
from click.testing import CliRunner, Result
from redis.exceptions import ConnectionError as RedisConnectionError
from zerolabel.cli.errors import (
    FAILURE_STATUS,
    USAGE_STATUS,
    ZerolabelGroup,
    remember_url,
    user_message,
)
from zerolabel.cli.main import main
from zerolabel.errors import ConfigError, JSONFileError, WeightsError

BAD_JSON = '[\n {"id": 1,\n  "data": }\n]'  # line 3, column 11


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Only what a test gives: no settings of the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("ZEROLABEL_", "LABEL_STUDIO_")) or name == "REDIS_URL":
            monkeypatch.delenv(name)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ls_down(closed_port) -> dict[str, str]:
    return {"LABEL_STUDIO_URL": f"http://127.0.0.1:{closed_port}", "LABEL_STUDIO_API_KEY": "t"}


@pytest.fixture
def fresh_runtime():
    """``zerolabel worker`` keeps its runtime per process: start and end without one."""
    from zerolabel.queue.jobs import get_runtime

    get_runtime.cache_clear()
    yield
    get_runtime.cache_clear()


def _tasks(objects_per_task: list[int]) -> list[dict]:
    """Tasks as ``zerolabel predict`` writes them, with that many box objects each."""
    tasks = []
    for index, count in enumerate(objects_per_task):
        result = [
            {
                "id": f"zl-t{index}-{n}-box",
                "type": "rectanglelabels",
                "from_name": "label",
                "to_name": "image",
                "original_width": 200,
                "original_height": 100,
                "value": {"x": 2 * n, "y": 10, "width": 2, "height": 5, "rectanglelabels": ["o"]},
            }
            for n in range(count)
        ]
        tasks.append(
            {
                "id": index + 1,
                "data": {"image": f"/data/local-files/?d=img{index}.jpg"},
                "predictions": [{"model_version": "v1", "result": result}],
            }
        )
    return tasks


def _write(path, content) -> str:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _run(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env)


def _error_line(result: Result, *words: str, exit_code: int = 1) -> str:
    """The one ``Error:`` line of a failed run, checked to name ``words``."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped error
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


# --- predict ---------------------------------------------------------------------------------


def test_predict_bad_setting(tmp_path):
    image = _write(tmp_path / "a.jpg", "not an image")
    result = _run(["predict", image, "-o", str(tmp_path / "out")], {"ZEROLABEL_BATCH_SIZE": "abc"})
    _error_line(result, "ZEROLABEL_BATCH_SIZE='abc' is not an integer")


def test_predict_missing_input_is_a_usage_error(tmp_path):
    result = _run(["predict", str(tmp_path / "missing.jpg")])
    _error_line(result, "missing.jpg", "matches no file", exit_code=2)


# --- eval ------------------------------------------------------------------------------------


def test_eval_malformed_export_names_file_and_line(tmp_path):
    export = _write(tmp_path / "export.json", BAD_JSON)
    _error_line(_run(["eval", "--from-file", export]), "export.json", "line 3, column 11")


def test_eval_project_when_label_studio_is_down(ls_down):
    result = _run(["eval", "--project", "3"], ls_down)
    _error_line(result, f"cannot reach Label Studio at {ls_down['LABEL_STUDIO_URL']}", "no reply")


def test_eval_predictions_need_ground_truth(tmp_path):
    predictions = _write(tmp_path / "coco.json", {"images": [], "annotations": []})
    _error_line(_run(["eval", predictions]), "--gt", exit_code=2)


# --- worker ----------------------------------------------------------------------------------


def test_worker_bad_setting(fresh_runtime):
    result = _run(["worker", "--burst"], {"ZEROLABEL_BATCH_SIZE": "abc"})
    _error_line(result, "ZEROLABEL_BATCH_SIZE='abc' is not an integer")


def test_worker_without_redis_names_the_url_before_loading_a_model(fresh_runtime, closed_port):
    url = f"redis://127.0.0.1:{closed_port}/0"
    result = _run(["worker", "--burst"], {"REDIS_URL": url, "ZEROLABEL_CHECKPOINT": "/none.pth"})
    _error_line(result, f"Redis unreachable at {url}")


def test_cli_errors_name_redis_without_its_password(fresh_runtime, closed_port):
    url = f"redis://:s3cret@127.0.0.1:{closed_port}/0"
    result = _run(["worker", "--burst"], {"REDIS_URL": url, "ZEROLABEL_CHECKPOINT": "/none.pth"})
    _error_line(result, f"Redis unreachable at redis://127.0.0.1:{closed_port}/0")
    assert "s3cret" not in result.output


def test_worker_message_names_only_settings_it_has(fresh_runtime):
    line = _error_line(_run(["worker"], {"ZEROLABEL_METHOD": "cad"}), "ZEROLABEL_CAD_CHECKPOINT")
    assert "--cad-checkpoint" not in line  # the option of predict, not of worker


# --- cluster ---------------------------------------------------------------------------------


def test_cluster_more_clusters_than_objects_fails_before_any_model(tmp_path):
    tasks = _write(tmp_path / "tasks.json", _tasks([5, 0, 9, 7]))
    result = _run(["cluster", tasks, "-k", "50", "-o", str(tmp_path / "out")])
    _error_line(result, "21 objects cannot make 50 clusters: lower -k to at most 21")
    assert not (tmp_path / "out").exists()


def test_cluster_counts_the_objects_of_the_chosen_model_version(tmp_path):
    tasks = _write(tmp_path / "tasks.json", _tasks([3, 2]))
    result = _run(["cluster", tasks, "-k", "2", "--model-version", "v0"])
    _error_line(result, "no objects to cluster", "'v0'")


def test_cluster_malformed_tasks_file_names_file_and_line(tmp_path):
    tasks = _write(tmp_path / "tasks.json", BAD_JSON)
    _error_line(_run(["cluster", tasks, "-k", "2"]), "tasks.json", "line 3, column 11")


def test_cluster_tasks_file_of_another_shape(tmp_path):
    tasks = _write(tmp_path / "tasks.json", {"tasks": []})
    _error_line(_run(["cluster", tasks]), "tasks.json", "a JSON list of task objects")


def test_cluster_k_below_one_is_a_usage_error(tmp_path):
    tasks = _write(tmp_path / "tasks.json", _tasks([2]))
    _error_line(_run(["cluster", tasks, "-k", "0"]), "-k", exit_code=2)


def test_cluster_without_weights_names_its_checkpoint_option_and_the_setting(tmp_path):
    # cluster takes -c/--checkpoint like predict, so the hint names both ways to give weights
    # (a command without the option shows the setting only: see test_weights_hint_*).
    tasks = _write(tmp_path / "tasks.json", _tasks([2]))
    env = {"ZEROLABEL_OFFLINE": "1", "ZEROLABEL_CHECKPOINT": "", "ZEROLABEL_DEVICE": "cpu"}
    line = _error_line(_run(["cluster", tasks, "--cache-dir", str(tmp_path)], env))
    assert "--checkpoint PATH or ZEROLABEL_CHECKPOINT=PATH" in line


def test_cluster_project_needs_label_studio_settings():
    _error_line(_run(["cluster", "--project", "1"]), "LABEL_STUDIO_URL", exit_code=2)


# --- relabel ---------------------------------------------------------------------------------


def test_relabel_malformed_mapping(tmp_path):
    tasks = _write(tmp_path / "tasks.json", _tasks([1]))
    mapping = _write(tmp_path / "mapping.json", '{"cluster_00": dog}')
    _error_line(_run(["relabel", tasks, "--mapping", mapping]), "mapping.json", "line 1")


def test_relabel_unwritable_output_names_the_path(tmp_path):
    tasks = _write(tmp_path / "tasks.json", _tasks([1]))
    mapping = _write(tmp_path / "mapping.json", {})
    out = tmp_path / "tasks.json" / "relabelled.json"  # below a file
    _error_line(_run(["relabel", tasks, "--mapping", mapping, "-o", str(out)]), "tasks.json")


# --- export ----------------------------------------------------------------------------------


def test_export_file_that_is_no_task_list(tmp_path):
    export = _write(tmp_path / "export.json", [1, 2])
    result = _run(["export", "--from-file", export, "-o", str(tmp_path / "out")])
    _error_line(result, "export.json", "a JSON list of task objects")


def test_export_project_when_label_studio_is_down(ls_down, tmp_path):
    result = _run(["export", "--project", "3", "-o", str(tmp_path / "out")], ls_down)
    _error_line(result, "cannot reach Label Studio at", "GET /api/tasks")


# --- prelabel --------------------------------------------------------------------------------


def test_prelabel_malformed_options(ls_down):
    result = _run(["prelabel", "--project", "3", "--options", "{bad"], ls_down)
    _error_line(result, "extra params are not valid JSON")


def test_prelabel_when_label_studio_is_down(ls_down, closed_port):
    env = {**ls_down, "REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"}
    result = _run(["prelabel", "--project", "3"], env)
    _error_line(result, f"cannot reach Label Studio at {ls_down['LABEL_STUDIO_URL']}")


def test_prelabel_bad_setting():
    result = _run(["prelabel", "--project", "3"], {"ZEROLABEL_WAIT_TIMEOUT_S": "soon"})
    _error_line(result, "ZEROLABEL_WAIT_TIMEOUT_S")


class _ProjectWithBackend:
    """A reachable Label Studio project of two tasks whose ML backend sets extra params."""

    url = "http://ls.test:8080"
    config = '<View><Image name="image" value="$image"/>' + (
        '<RectangleLabels name="label" toName="image"><Label value="object"/></RectangleLabels>'
        "</View>"
    )

    def __enter__(self) -> _ProjectWithBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def label_config(self, project_id: int) -> str:
        return self.config

    def ml_backends(self, project_id: int) -> list[dict]:
        return [
            {"title": "zerolabel", "url": "http://b:9090", "extra_params": {"method": "tokencut"}}
        ]

    def tasks(self, project_id: int, page_size: int = 100) -> list[dict]:
        return [{"id": i, "data": {"image": f"/data/upload/3/{i}.png"}} for i in (1, 2)]


def test_prelabel_with_no_live_worker_says_so_and_queues_nothing(monkeypatch):
    import fakeredis
    from zerolabel.queue.dispatch import make_queue
    from zerolabel.settings import QueueSettings

    redis = fakeredis.FakeRedis()
    monkeypatch.setattr("zerolabel.cli.loop.ls_client", lambda settings: _ProjectWithBackend())
    monkeypatch.setattr("zerolabel.queue.service.connect", lambda settings: redis)
    env = {"REDIS_URL": "redis://127.0.0.1:6390/0", "ZEROLABEL_QUEUE": "gpu"}
    result = _run(["prelabel", "--project", "3"], env)
    _error_line(
        result,
        "no live worker on queue 'gpu' at redis://127.0.0.1:6390/0",
        "2 task(s) to pre-label",
        "start `zerolabel worker`",
    )
    assert make_queue(redis, QueueSettings(queue="gpu")).count == 0


# --- train-cad and self-train ----------------------------------------------------------------


def test_train_cad_malformed_coco(tmp_path):
    coco = _write(tmp_path / "coco.json", BAD_JSON)
    result = _run(["train-cad", "--coco", coco, "--images", str(tmp_path), "-o", str(tmp_path)])
    _error_line(result, "coco.json", "line 3, column 11")


def test_train_cad_labels_that_are_not_coco(tmp_path):
    coco = _write(tmp_path / "coco.json", _tasks([1]))
    result = _run(["train-cad", "--coco", coco, "--images", str(tmp_path), "-o", str(tmp_path)])
    _error_line(result, "coco.json", "COCO detection labels")


def test_self_train_coco_without_images(tmp_path):
    coco = _write(tmp_path / "coco.json", {"annotations": []})
    detector = _write(tmp_path / "cad.pt", "not a detector")
    args = ["self-train", "--checkpoint", detector, "--coco", coco]
    result = _run([*args, "--images", str(tmp_path), "-o", str(tmp_path / "out")])
    _error_line(result, "coco.json", "no images list")


# --- serve (zerolabel-backend) ---------------------------------------------------------------


def test_serve_bad_setting():
    result = _run(["serve", "--port", "1"], {"ZEROLABEL_BATCH_SIZE": "abc"})
    _error_line(result, "ZEROLABEL_BATCH_SIZE='abc' is not an integer")


# --- the one place that decides ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConfigError("ZEROLABEL_X is wrong"), "ZEROLABEL_X is wrong"),
        (FileNotFoundError(2, "No such file or directory", "/d/a.json"), "/d/a.json: No such"),
        (PermissionError(13, "Permission denied", "out/x"), "out/x: Permission denied"),
        (IsADirectoryError(21, "Is a directory", "a", None, "b"), "a -> b: Is a directory"),
        (json.JSONDecodeError("Expecting value", "{\n\n x", 4), "line 3, column 2"),
        (ValueError("first\nsecond"), "first second"),
        (RedisConnectionError("refused"), "Redis unreachable at REDIS_URL: refused"),
    ],
)
def test_user_message_is_one_line_naming_the_cause(error, expected):
    message = user_message(error)
    assert message is not None and expected in message and "\n" not in message


def test_json_file_error_names_file_line_and_column():
    error = JSONFileError("tasks.json", json.JSONDecodeError("Expecting value", "[\n  ,", 4))
    assert str(error) == "tasks.json: not valid JSON: Expecting value at line 2, column 3"


def test_request_errors_name_the_url_without_its_query():
    error = requests.ConnectionError("refused")
    error.request = requests.Request("GET", "http://ls.example:8080/api/x?token=s").prepare()
    message = user_message(error)
    assert message is not None and "http://ls.example:8080/api/x failed" in message
    assert "token" not in message


def test_weights_hint_keeps_options_the_command_has():
    hint = "Give a local checkpoint with --checkpoint PATH or ZEROLABEL_CHECKPOINT=PATH."
    with_option = click.Command("p", params=[click.Option(["-c", "--checkpoint"])])
    assert user_message(WeightsError(hint), command=with_option) == hint
    without = user_message(WeightsError(hint), command=click.Command("w"))
    assert without == "Give a local checkpoint with ZEROLABEL_CHECKPOINT=PATH."


def _group_running(error: BaseException) -> ZerolabelGroup:
    group = ZerolabelGroup("g")

    @group.command("run")
    def run() -> None:
        remember_url("redis", "redis://queue:6379/0")
        raise error

    return group


def test_user_errors_exit_1_with_one_line():
    result = CliRunner().invoke(_group_running(RedisConnectionError("refused")), ["run"])
    _error_line(result, "Redis unreachable at redis://queue:6379/0: refused")


def test_bugs_keep_their_traceback():
    result = CliRunner().invoke(_group_running(RuntimeError("a bug")), ["run"])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    assert "Error:" not in result.output


def test_interrupt_is_left_to_click():
    result = CliRunner().invoke(_group_running(KeyboardInterrupt()), ["run"])
    assert result.exit_code == 1 and "Aborted!" in result.output and "Error:" not in result.output


# --- eval refuses what it cannot score -------------------------------------------------------


def _annotated(tasks: list[dict]) -> list[dict]:
    for task in tasks:
        task["annotations"] = [{"id": task["id"], "result": task["predictions"][0]["result"]}]
    return tasks


def test_eval_of_an_export_file_with_predictions_listed_by_id_is_refused(tmp_path):
    tasks = _annotated(_tasks([1, 2]))
    for task in tasks:
        task["predictions"] = [task["id"] + 100]  # Label Studio's JSON export lists ids only
    result = _run(["eval", "--from-file", _write(tmp_path / "export.json", tasks)])
    _error_line(result, "predictions are listed only by id", "--project")


def test_eval_of_a_model_version_not_present_lists_the_versions(tmp_path):
    tasks = _write(tmp_path / "tasks.json", _annotated(_tasks([1, 2])))
    result = _run(["eval", "--from-file", tasks, "--model-version", "nope"])
    _error_line(result, "model version 'nope' not found", "'v1'")


def test_export_of_predictions_of_a_model_version_not_present_is_refused(tmp_path):
    tasks = _write(tmp_path / "tasks.json", _tasks([1]))
    result = _run(
        ["export", "--from-file", tasks, "-o", str(tmp_path / "out"), "--source", "predictions"]
        + ["--model-version", "nope"]
    )
    _error_line(result, "model version 'nope' not found", "'v1'")
    assert not (tmp_path / "out").exists()


# --- --env-file ------------------------------------------------------------------------------


def test_a_missing_env_file_is_one_error_line(tmp_path):
    result = _run(["--env-file", str(tmp_path / "none.env"), "eval", "--project", "1"])
    _error_line(result, "env file", "none.env")


def test_settings_come_from_the_env_file(tmp_path):
    env_file = _write(tmp_path / "zerolabel.env", "# worker settings\nZEROLABEL_BATCH_SIZE=abc\n")
    image = _write(tmp_path / "a.jpg", "not an image")
    try:
        result = _run(["--env-file", env_file, "predict", image, "-o", str(tmp_path / "out")])
        _error_line(result, "ZEROLABEL_BATCH_SIZE='abc' is not an integer")
    finally:
        os.environ.pop("ZEROLABEL_BATCH_SIZE", None)  # the file wrote it into this process


# --- the command line itself is wrong: one line, exit status 2 ---------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(
            ["predict", "a.jpg", "--max-side", "big"], ["'--max-side'", "'big'"], id="type"
        ),
        pytest.param(["train-cad", "--iterations", "0"], ["'--iterations'", "0"], id="range"),
        pytest.param(["predict"], ["Missing argument 'INPUTS...'"], id="missing-argument"),
        pytest.param(["predict", "a.jpg", "--nope"], ["No such option", "--nope"], id="option"),
        pytest.param(["--bogus", "predict"], ["No such option", "--bogus"], id="group-option"),
        pytest.param(["predcit"], ["No such command 'predcit'"], id="command"),
        pytest.param(["eval", "--gt", "."], ["give PREDICTIONS with --gt"], id="usage-error"),
    ],
)
def test_a_wrong_command_line_is_one_error_line_with_status_2(args: list[str], words: list[str]):
    result = _run(args)
    line = _error_line(result, *words, exit_code=USAGE_STATUS)
    assert result.output.splitlines() == [line]  # no usage block
    assert line.endswith("--help')")  # where the usage is


def test_help_still_shows_the_usage():
    result = _run(["train-cad", "--help"])
    assert result.exit_code == 0 and result.output.startswith("Usage: ")
    assert "--iterations INTEGER RANGE" in result.output


def test_failures_while_running_have_status_1():
    assert (USAGE_STATUS, FAILURE_STATUS) == (2, 1)
    result = CliRunner().invoke(_group_running(ConfigError("ZEROLABEL_X is wrong")), ["run"])
    _error_line(result, "ZEROLABEL_X is wrong", exit_code=FAILURE_STATUS)


def test_predict_on_a_folder_without_images_fails_before_loading_a_model(tmp_path, monkeypatch):
    from zerolabel.loop import predict as batch

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(batch.BatchJob, "create", no_model)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    result = _run(["predict", str(tmp_path / "empty"), "-o", str(tmp_path / "out")])
    line = _error_line(result, "no image in", "empty", ".jpg", exit_code=USAGE_STATUS)
    assert result.output.splitlines() == [line]
    assert not (tmp_path / "out").exists()
