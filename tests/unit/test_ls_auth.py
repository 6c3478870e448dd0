"""LabelStudioAuth, requests' auth flow of Label Studio tokens, against a fake Label Studio on
127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from requests.structures import CaseInsensitiveDict
from zerolabel.errors import ConfigError, TokenExchangeError
from zerolabel.labelstudio.auth import ACCESS_TOKEN_TTL_S, TOKEN_REFRESH_PATH, LabelStudioAuth
from zerolabel.sites import Origin, bound_origin, may_receive_credentials
from zerolabel.transport import plain_session

from tests.servers import threaded_servers

LEGACY = "0123456789abcdef0123456789abcdef01234567"
PAT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCIsImp0aSI6IjEifQ.c2lnbmF0dXJlLXBhdA"


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class FakeLabelStudio:
    """What the fake answers and what it saw."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    access_tokens: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    exchange_reply: tuple[int, dict[str, Any]] | None = None  # instead of a fresh access token

    def exchanges(self) -> list[Seen]:
        return [s for s in self.seen if s.path == TOKEN_REFRESH_PATH]

    def authorizations(self, path: str = "/api/projects/1") -> list[str | None]:
        return [s.authorization for s in self.seen if s.path == path]


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        state = self._record(None)
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        bearer_ok = token in state.access_tokens and token not in state.revoked
        if (scheme, token) == ("Token", LEGACY) or (scheme == "Bearer" and bearer_ok):
            return self._json(200, {"id": 1})
        self._json(401, {"detail": "Invalid token."})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        state = self._record(body)
        if self.path != TOKEN_REFRESH_PATH:
            return self._json(404, {})
        if state.exchange_reply is not None:
            return self._json(*state.exchange_reply)
        if body.get("refresh") != PAT:
            return self._json(401, {"detail": "Token is invalid", "code": "token_not_valid"})
        state.access_tokens.append(f"access-{len(state.access_tokens) + 1}")
        self._json(200, {"access": state.access_tokens[-1]})

    def _record(self, body: Any) -> FakeLabelStudio:
        state = self.server.state
        state.seen.append(Seen(self.command, self.path, self.headers.get("Authorization"), body))
        return state

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    state: FakeLabelStudio


@pytest.fixture
def make_server() -> Iterator[Callable[[], FakeLabelStudio]]:
    """Start fakes on 127.0.0.1 (free ports); all are stopped after the test."""
    with threaded_servers() as run:

        def start() -> FakeLabelStudio:
            server = _Server(("127.0.0.1", 0), Handler)
            server.state = FakeLabelStudio(url=f"http://127.0.0.1:{server.server_address[1]}")
            run(server)
            return server.state

        yield start


@pytest.fixture
def ls(make_server: Callable[[], FakeLabelStudio]) -> FakeLabelStudio:
    return make_server()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with plain_session() as opened:
        yield opened


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _get(auth: LabelStudioAuth, session: requests.Session, url: str) -> requests.Response:
    """GET ``url`` the way callers do: ``auth=`` on a plain session."""
    return session.get(url, auth=auth, timeout=5)


class _NoExchange(requests.Session):
    """A session for token exchanges that must never happen."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a token exchange was attempted: {args}")


def _header(auth: LabelStudioAuth, url: str) -> str | None:
    """The Authorization header ``auth`` gives a request to ``url``, taken as it is given."""
    request = requests.PreparedRequest()
    request.url, request.headers = url, CaseInsensitiveDict()
    return auth(request).headers.get("Authorization")


# --- the header --------------------------------------------------------------------------


def test_pat_is_exchanged_once_and_reused_within_the_ttl(ls, session):
    clock = FakeClock()
    auth = LabelStudioAuth(ls.url, PAT, clock=clock)
    for step in (0.0, 100.0, ACCESS_TOKEN_TTL_S - 101.0):
        clock.now += step
        assert _get(auth, session, f"{ls.url}/api/projects/1").status_code == 200
    assert [s.body for s in ls.exchanges()] == [{"refresh": PAT}]
    assert ls.authorizations() == ["Bearer access-1"] * 3


def test_access_token_is_exchanged_again_after_the_ttl(ls, session):
    clock = FakeClock()
    auth = LabelStudioAuth(ls.url, PAT, clock=clock)
    _get(auth, session, f"{ls.url}/api/projects/1")
    clock.now += ACCESS_TOKEN_TTL_S
    _get(auth, session, f"{ls.url}/api/projects/1")
    assert len(ls.exchanges()) == 2
    assert ls.authorizations() == ["Bearer access-1", "Bearer access-2"]


def test_legacy_token_is_sent_as_token_and_never_exchanged(ls, session):
    auth = LabelStudioAuth(ls.url, LEGACY)
    assert _get(auth, session, f"{ls.url}/api/projects/1").status_code == 200
    assert ls.authorizations() == [f"Token {LEGACY}"] and ls.exchanges() == []


def test_no_token_no_header(ls, session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    auth = LabelStudioAuth(ls.url, None)
    assert _get(auth, session, f"{ls.url}/api/projects/1").status_code == 401
    assert ls.authorizations() == [None] and ls.exchanges() == []


def test_refused_access_token_is_exchanged_again_once(ls, session):
    auth = LabelStudioAuth(ls.url, PAT)
    _get(auth, session, f"{ls.url}/api/projects/1")
    ls.revoked.add("access-1")
    assert _get(auth, session, f"{ls.url}/api/projects/1").status_code == 200
    assert ls.authorizations() == ["Bearer access-1", "Bearer access-1", "Bearer access-2"]


def test_the_exchange_goes_through_the_callers_session(ls, session):
    sent: list[str] = []
    session.hooks["response"].append(lambda reply, **_: sent.append(reply.request.path_url))
    auth = LabelStudioAuth(ls.url, PAT, session=session)
    reply = _get(auth, session, f"{ls.url}/api/projects/1")
    ls.revoked.add("access-1")
    again = _get(auth, session, f"{ls.url}/api/projects/1")
    assert reply.status_code == again.status_code == 200
    assert [r.status_code for r in again.history] == [401]  # the refused try, kept as history
    assert sent.count(TOKEN_REFRESH_PATH) == 2 and ls.exchanges()[0].authorization is None


def test_access_token_refused_twice_returns_the_401(ls, session):
    auth = LabelStudioAuth(ls.url, PAT)
    _get(auth, session, f"{ls.url}/api/projects/1")
    ls.revoked.update({"access-1", "access-2"})
    assert _get(auth, session, f"{ls.url}/api/projects/1").status_code == 401
    assert len(ls.exchanges()) == 2  # once more, then no loop


def test_refused_legacy_token_is_not_sent_again(ls, session):
    auth = LabelStudioAuth(ls.url, "f" * 40)
    assert _get(auth, session, f"{ls.url}/api/projects/1").status_code == 401
    assert ls.authorizations() == [f"Token {'f' * 40}"] and ls.exchanges() == []


# --- where the header goes ---------------------------------------------------------------


def test_no_header_for_another_origin_or_a_url_with_user_info(make_server, ls, session):
    other = make_server()
    for token in (LEGACY, PAT):
        auth = LabelStudioAuth(ls.url, token)
        _get(auth, session, f"{other.url}/api/projects/1")
        port = urlsplit(ls.url).port
        _get(auth, session, f"http://user:pw@127.0.0.1:{port}/api/projects/1")
    assert other.authorizations() == [None, None]
    assert ls.authorizations() == [None, None] and ls.exchanges() == []


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:8081/x", id="other-port"),
        pytest.param("https://127.0.0.1:8080/x", id="other-scheme"),
        pytest.param("http://localhost:8080/x", id="other-host"),
        pytest.param("http://user@127.0.0.1:8080/x", id="user"),
        pytest.param("http://user:pw@127.0.0.1:8080/x", id="user-password"),
        pytest.param("http://@127.0.0.1:8080/x", id="empty-user-info"),
        pytest.param("http://127.0.0.1:8080\\@evil.example/x", id="backslash-in-host"),
        pytest.param("http://evil.example\\@127.0.0.1:8080/x", id="backslash-before-at"),
        pytest.param("http://127.0.0.1:8080/data\\x.png", id="backslash-in-path"),
        pytest.param("http://127.0.0.1:8080/x\n", id="newline"),
        pytest.param("http://127.0.0.1:notaport/x", id="bad-port"),
        pytest.param("/data/upload/1/x.png", id="relative"),
        pytest.param("ftp://127.0.0.1:8080/x", id="ftp"),
    ],
)
def test_no_header_and_no_exchange_for(url: str):
    for token in (LEGACY, PAT):
        auth = LabelStudioAuth("http://127.0.0.1:8080", token, session=_NoExchange())
        assert not auth.covers(url)
        assert _header(auth, url) is None


@pytest.mark.parametrize(
    ("bound", "url"),
    [
        pytest.param("http://127.0.0.1:8080", "http://127.0.0.1:8080/data/x.png?d=a", id="same"),
        pytest.param("http://LS.example", "HTTP://ls.example:80/x", id="case-and-default-port"),
        pytest.param("https://ls.example/base/", "https://ls.example:443/other", id="any-path"),
        pytest.param("http://[::1]:8080", "http://[::1]:8080/x", id="ipv6"),
    ],
)
def test_header_for_the_bound_origin(bound: str, url: str):
    auth = LabelStudioAuth(bound, LEGACY)
    assert _header(auth, url) == f"Token {LEGACY}"
    assert may_receive_credentials(url, bound_origin(bound))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://ls.example/base/data/upload/1/x.png", True, id="upload"),
        pytest.param("https://ls.example/base/data/local-files/?d=a.png", True, id="local-files"),
        pytest.param("https://ls.example/base/api/projects/", False, id="api"),
        pytest.param("https://ls.example/data/upload/1/x.png", False, id="outside-the-base-path"),
        pytest.param("https://other.example/base/data/upload/1/x.png", False, id="other-host"),
    ],
)
def test_images_only_puts_the_header_on_image_paths_only(url: str, expected: bool):
    auth = LabelStudioAuth("https://ls.example/base", LEGACY, images_only=True)
    assert auth.covers(url) is expected
    assert _header(auth, url) == (f"Token {LEGACY}" if expected else None)


def test_the_bound_origin_is_parsed_once_from_the_url():
    auth = LabelStudioAuth("https://LS.example/base/", LEGACY)
    assert auth.origin == Origin("https", "ls.example", 443)
    assert auth.base_url == "https://LS.example/base"
    assert auth.refresh_url == "https://LS.example/base/api/token/refresh/"


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:8080",
        "ftp://ls.example",
        "http://",
        "http://ls.example:notaport",
        "http://admin:hunter2@ls.example",
        "http://ls.example\\@evil.example",
        "http://[::1",
    ],
)
def test_a_url_credentials_may_not_go_to_is_refused(url: str):
    with pytest.raises(ConfigError, match="LABEL_STUDIO_URL") as caught:
        LabelStudioAuth(url, LEGACY)
    assert "hunter2" not in str(caught.value)


# --- the token exchange ------------------------------------------------------------------


def test_a_refused_pat_raises_without_the_token(ls, session):
    bad = PAT[:-4] + "XXXX"
    with pytest.raises(TokenExchangeError) as caught:
        _get(LabelStudioAuth(ls.url, bad), session, f"{ls.url}/api/projects/1")
    error = caught.value
    assert error.refused and not error.transient and error.status == 401
    assert error.detail == "Token is invalid" and bad not in str(error)
    assert ls.authorizations() == []  # the request itself is never sent


@pytest.mark.parametrize(
    ("reply", "refused", "transient", "detail"),
    [
        pytest.param((503, {"detail": "busy"}), False, True, "busy", id="busy"),
        pytest.param((400, {"refresh": ["required"]}), True, False, '{"refresh": ', id="400"),
        pytest.param((200, {"nothing": 1}), False, False, "holds no access token", id="no-access"),
        pytest.param((200, {"access": ""}), False, False, "holds no access token", id="empty"),
        pytest.param((403, {"detail": f"bad {PAT}"}), True, False, "bad <token>", id="echo"),
    ],
)
def test_exchange_failures_are_told_apart(ls, session, reply, refused, transient, detail):
    ls.exchange_reply = reply
    with pytest.raises(TokenExchangeError) as caught:
        _get(LabelStudioAuth(ls.url, PAT), session, f"{ls.url}/api/projects/1")
    error = caught.value
    assert (error.status, error.refused, error.transient) == (reply[0], refused, transient)
    assert detail in error.detail and PAT not in str(error)


def test_the_access_token_is_scrubbed_too(ls, session):
    auth = LabelStudioAuth(ls.url, PAT)
    _get(auth, session, f"{ls.url}/api/projects/1")
    assert auth.scrub(f"got {PAT} and access-1") == "got <token> and <token>"


def test_hints_and_repr_name_the_kind_of_token_never_the_token():
    hints = {
        token: LabelStudioAuth("http://ls.example", token).hint() for token in (PAT, LEGACY, None)
    }
    assert "personal access token was refused" in hints[PAT]
    assert "legacy token was refused" in hints[LEGACY]
    assert "set LABEL_STUDIO_API_KEY" in hints[None]
    auth = LabelStudioAuth("http://ls.example", PAT)
    assert repr(auth) == "LabelStudioAuth('http://ls.example:80', <personal access token>)"
    assert PAT not in repr(auth) and LEGACY not in repr(LabelStudioAuth("http://x", LEGACY))
