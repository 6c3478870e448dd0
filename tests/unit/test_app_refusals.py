"""A refusal reaches Label Studio's users: its cause travels in the status line's reason phrase.

Label Studio 1.23 shows ``str(HTTPError)`` of a failed /setup ("400 Client Error: <reason> for
url: ...") and never the body, so the cause must be in the status line, through the production
server (waitress), safe for a status line: one line of Latin-1, bounded, without credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import requests
import waitress
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import create_app
from zerolabel_backend.protocol import MAX_REASON_CHARS, reason_phrase

CONFIG = (Path(__file__).resolve().parents[2] / "examples" / "label_config.xml").read_text()
LS_URL = "http://ls:8080"


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """The backend behind waitress on a free loopback port, as ``zerolabel serve`` runs it."""
    settings = BackendSettings.from_env(
        {"ZEROLABEL_WAIT_TIMEOUT_S": "0.2", "LABEL_STUDIO_URL": LS_URL}
    )
    app = create_app(PredictionService(settings, redis=fakeredis.FakeRedis()))
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=2, ident="zerolabel")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    server.task_dispatcher.shutdown()


def _setup(url: str, **fields: object) -> requests.Response:
    body = {"project": "3.1700000000", "schema": CONFIG, "hostname": LS_URL, **fields}
    return requests.post(f"{url}/setup", json=body, timeout=10, headers={"Connection": "close"})


def _as_label_studio_shows_it(reply: requests.Response) -> str:
    """What Label Studio 1.23 keeps of a failed call: ``str()`` of raise_for_status's error."""
    with pytest.raises(requests.HTTPError) as caught:
        reply.raise_for_status()
    return str(caught.value)


@pytest.mark.parametrize(
    ("fields", "cause"),
    [
        pytest.param(
            {"extra_params": {"colour": "red"}},
            "unknown extra params ['colour']: allowed keys are",
            id="unknown-extra-param",
        ),
        pytest.param(
            {"extra_params": '{"method": "maskcut"'},
            "extra params are not valid JSON",
            id="extra-params-not-json",
        ),
        pytest.param(
            {"hostname": "http://localhost:8080"},
            f"hostname http://localhost:8080 is not the configured Label Studio "
            f"(LABEL_STUDIO_URL={LS_URL}); add it to ZEROLABEL_LABEL_STUDIO_ALIASES",
            id="hostname-not-the-configured-label-studio",
        ),
        pytest.param(
            {"schema": "<View><Text name='t' value='$t'/></View>"}, "no <Image> tag", id="schema"
        ),
        pytest.param({"project": ["3"]}, "'project' must be a string", id="malformed-body"),
    ],
)
def test_a_refused_setup_says_why_in_its_status_line(served: str, fields: dict, cause: str):
    reply = _setup(served, **fields)
    assert reply.status_code == 400
    assert cause in reply.json()["error"]  # the body keeps the whole message
    assert cause in reply.reason
    shown = _as_label_studio_shows_it(reply)
    assert shown.startswith(f"400 Client Error: {reply.reason} for url: {served}/setup")


def test_a_labeling_config_predict_cannot_serve_is_refused_with_the_reason(served: str):
    body = {"tasks": [{"id": 1, "data": {"text": "x"}}], "label_config": "<View></View>"}
    reply = requests.post(f"{served}/predict", json=body, timeout=10)
    assert reply.status_code == 400 and reply.reason == reply.json()["error"]
    assert "<Image>" in _as_label_studio_shows_it(reply)


def test_a_good_setup_keeps_the_standard_status_line(served: str):
    reply = _setup(served)
    assert (reply.status_code, reply.reason) == (200, "OK") and reply.json()["model_version"]


def test_credentials_in_a_hostname_never_reach_the_status_line(served: str):
    reply = _setup(served, hostname="http://admin:s3cret@evil.example:1/ls?token=t0k3n")
    assert reply.status_code == 400
    assert "hostname http://evil.example:1/ls is not the configured Label Studio" in reply.reason
    for secret in ("s3cret", "admin", "t0k3n"):
        assert secret not in reply.reason and secret not in reply.text


def test_a_long_cause_is_cut_to_a_bounded_phrase(served: str):
    reply = _setup(served, extra_params={f"option_{n}": n for n in range(200)})
    assert reply.status_code == 400 and len(reply.json()["error"]) > MAX_REASON_CHARS
    assert len(reply.reason) <= MAX_REASON_CHARS and reply.reason.endswith("...")
    assert reply.json()["error"].startswith(reply.reason[:-3])


@pytest.mark.parametrize(
    ("message", "phrase"),
    [
        pytest.param("two\r\nlines\n\tand tabs", "two lines and tabs", id="one-line"),
        pytest.param("café", "café", id="latin-1-kept"),
        pytest.param("a → b — c…", "a ? b ? c...", id="others-replaced"),
        pytest.param("nul\x00 and bell\x07", "nul? and bell?", id="control-characters"),
        pytest.param("see https://u:p@h:1/a?key=k#frag.", "see https://h:1/a", id="url-secrets"),
        pytest.param("(LABEL_STUDIO_URL=http://ls/?x=1)", "(LABEL_STUDIO_URL=http://ls/)", id="q"),
        pytest.param(" \n ", "BAD REQUEST", id="empty"),
    ],
)
def test_reason_phrases_are_one_safe_line(message: str, phrase: str):
    assert reason_phrase(message) == phrase
    assert reason_phrase(message).encode("latin-1").decode("latin-1") == phrase


def test_reason_phrases_are_bounded():
    phrase = reason_phrase("word " * 1000)
    assert MAX_REASON_CHARS - 5 <= len(phrase) <= MAX_REASON_CHARS and phrase.endswith("...")
    assert phrase.startswith("word word ")
