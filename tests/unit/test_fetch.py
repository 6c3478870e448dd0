"""Image fetching against a fake Label Studio on 127.0.0.1: auth, allow-list, redirects, retries."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from PIL import Image
from zerolabel.errors import ConfigError, ImageLoadError, TransientFetchError
from zerolabel.io.fetch import Fetcher, FetchPolicy
from zerolabel.io.images import ImageLimits
from zerolabel.settings import WorkerSettings
from zerolabel.sites import ALLOWED_HOSTS_SETTING

from tests.servers import ReplyHandler, threaded_servers

LEGACY = "0123456789abcdef0123456789abcdef01234567"
PAT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCIsImp0aSI6IjEifQ.c2lnbmF0dXJlLXBhdA"
LIMITS = ImageLimits()
FAST: dict[str, Any] = {"timeout_s": 2.0, "retries": 2, "backoff_s": 0.01}


def _encode(fmt: str, size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


PNG, JPEG = _encode("PNG"), _encode("JPEG", (10, 4))


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeServer:
    """What the handler serves and what it saw; one per HTTP server."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    access_tokens: set[str] = field(default_factory=set)
    exchanges: int = 0
    failures_left: int = 0  # /flaky.png answers 503 this many times
    redirect_to: str = ""  # target of /redirect and /data/upload/redirect
    refuse_bearer: bool = False  # answer 401 to every access token, even fresh ones
    stop: threading.Event = field(default_factory=threading.Event)

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def authorizations(self) -> list[str | None]:
        return [s.headers.get("Authorization") for s in self.seen]


class Handler(ReplyHandler):
    server: _Server

    def do_POST(self) -> None:
        state = self._record()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/api/token/refresh/":
            return self._send(404, b"")
        state.exchanges += 1
        if json.loads(body).get("refresh") != PAT:
            return self._send(401, b'{"detail": "Token is invalid or expired"}')
        access = f"access-{state.exchanges}"
        state.access_tokens.add(access)
        self._send(200, json.dumps({"access": access}).encode(), "application/json")

    def do_GET(self) -> None:
        state = self._record()
        path = urlsplit(self.path).path
        if path.startswith("/data/"):
            return self._ls_route(state, path)
        route = _ROUTES.get(path)
        if route is None:
            return self._send(404, b"not found")
        route(self, state)

    def _ls_route(self, state: FakeServer, path: str) -> None:
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        bearer_ok = token in state.access_tokens and not state.refuse_bearer
        if not ((scheme == "Token" and token == LEGACY) or (scheme == "Bearer" and bearer_ok)):
            return self._send(401, b'{"detail": "Authentication credentials were not provided."}')
        if path == "/data/upload/redirect":
            return self._redirect(state.redirect_to)
        d = parse_qs(urlsplit(self.path).query).get("d", [""])[0]
        if path == "/data/upload/1/x.png" or d == "set1/x.png":
            return self._send(200, PNG, "image/png")
        self._send(404, b"")

    def _record(self) -> FakeServer:
        state = self.server.state
        state.seen.append(Seen(self.command, self.path, dict(self.headers)))
        return state

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _flaky(handler: Handler, state: FakeServer) -> None:
    if state.failures_left > 0:
        state.failures_left -= 1
        return handler._send(503, b"busy")
    handler._send(200, PNG, "image/png")


def _slow(handler: Handler, state: FakeServer) -> None:
    state.stop.wait(2.0)
    handler._send(200, PNG, "image/png")


def _drip(handler: Handler, state: FakeServer) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(len(PNG)))
    handler.end_headers()
    for byte in PNG:
        if state.stop.wait(0.02):
            return
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()


def _big(handler: Handler, state: FakeServer) -> None:
    handler.send_response(200)  # no Content-Length: HTTP/1.0, the body ends when the socket closes
    handler.send_header("Content-Type", "image/png")
    handler.end_headers()
    handler.wfile.write(PNG + b"\0" * 200_000)


_ROUTES: dict[str, Callable[[Handler, FakeServer], None]] = {
    "/img.png": lambda h, s: h._send(200, PNG, "image/png"),
    "/photo.jpg": lambda h, s: h._send(200, JPEG, "image/jpeg"),
    "/page.html": lambda h, s: h._send(200, b"<html>log in</html>", "text/html; charset=utf-8"),
    "/flaky.png": _flaky,
    "/unavailable.png": lambda h, s: h._send(503, b"down"),
    "/slow.png": _slow,
    "/drip.png": _drip,
    "/big.png": _big,
    "/declared-big.png": lambda h, s: h._send(200, PNG + b"\0" * 5000, "image/png"),
    "/redirect": lambda h, s: h._redirect(s.redirect_to),
    "/loop": lambda h, s: h._redirect("/loop"),
}


class _Server(ThreadingHTTPServer):
    state: FakeServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hang up on purpose (size limit, timeouts)


@pytest.fixture
def make_server() -> Iterator[Callable[[], FakeServer]]:
    """Start fake servers on 127.0.0.1 (free ports); all are stopped after the test."""
    with threaded_servers() as run:

        def start() -> FakeServer:
            server = _Server(("127.0.0.1", 0), Handler)
            server.state = FakeServer(url=f"http://127.0.0.1:{server.server_address[1]}")
            run(server, before_stop=server.state.stop.set)
            return server.state

        yield start


@pytest.fixture
def ls(make_server: Callable[[], FakeServer]) -> FakeServer:
    return make_server()


@pytest.fixture
def other(make_server: Callable[[], FakeServer]) -> FakeServer:
    """A second host (another port) that is not Label Studio."""
    return make_server()


@pytest.fixture
def fetcher_for() -> Iterator[Callable[..., Fetcher]]:
    fetchers: list[Fetcher] = []

    def build(policy: FetchPolicy, **kwargs: object) -> Fetcher:
        fetchers.append(Fetcher(policy, **kwargs))  # type: ignore[arg-type]
        return fetchers[-1]

    yield build
    for fetcher in fetchers:
        fetcher.close()


def _host(server: FakeServer) -> str:
    return urlsplit(server.url).netloc


def test_upload_url_with_legacy_token(ls: FakeServer, fetcher_for: Callable[..., Fetcher]):
    fetcher = fetcher_for(FetchPolicy(ls.url, LEGACY, **FAST))
    image = fetcher.fetch("/data/upload/1/x.png", LIMITS)
    assert image.pixels.shape == (6, 8, 3) and image.original_hw == (6, 8)
    assert image.source == f"{ls.url}/data/upload/1/x.png"
    assert ls.authorizations() == [f"Token {LEGACY}"]


def test_local_files_url_keeps_only_d_in_messages(
    ls: FakeServer, fetcher_for: Callable[..., Fetcher]
):
    fetcher = fetcher_for(FetchPolicy(ls.url, LEGACY, **FAST))
    assert fetcher.fetch("/data/local-files/?d=set1/x.png", LIMITS).original_hw == (6, 8)
    with pytest.raises(ImageLoadError, match="404") as info:
        fetcher.fetch("/data/local-files/?d=set1/gone.png&sig=SECRET", LIMITS)
    assert info.value.source == f"{ls.url}/data/local-files/?d=set1/gone.png"
    assert "Local Files storage" in info.value.reason and "SECRET" not in str(info.value)


def test_pat_is_exchanged_once_and_sent_as_bearer(
    ls: FakeServer, fetcher_for: Callable[..., Fetcher]
):
    fetcher = fetcher_for(FetchPolicy(ls.url, PAT, **FAST))
    for _ in range(3):
        fetcher.fetch("/data/upload/1/x.png", LIMITS)
    assert ls.exchanges == 1
    assert ls.paths() == ["/api/token/refresh/"] + ["/data/upload/1/x.png"] * 3
    assert ls.authorizations()[1:] == ["Bearer access-1"] * 3


def test_access_token_expires_after_four_minutes(
    ls: FakeServer, fetcher_for: Callable[..., Fetcher]
):
    now = [1000.0]
    fetcher = fetcher_for(FetchPolicy(ls.url, PAT, **FAST), clock=lambda: now[0])
    fetcher.fetch("/data/upload/1/x.png", LIMITS)
    now[0] += 239.0
    fetcher.fetch("/data/upload/1/x.png", LIMITS)
    now[0] += 2.0
    fetcher.fetch("/data/upload/1/x.png", LIMITS)
    assert ls.exchanges == 2 and ls.authorizations()[-1] == "Bearer access-2"


def test_refused_access_token_is_exchanged_again_once(
    ls: FakeServer, fetcher_for: Callable[..., Fetcher]
):
    fetcher = fetcher_for(FetchPolicy(ls.url, PAT, **FAST))
    fetcher.fetch("/data/upload/1/x.png", LIMITS)
    ls.access_tokens.clear()  # LS forgot it (restart, expiry)
    fetcher.fetch("/data/upload/1/x.png", LIMITS)
    assert ls.exchanges == 2
    assert ls.authorizations()[-3:] == ["Bearer access-1", None, "Bearer access-2"]


def test_access_token_refused_after_refresh_is_permanent(
    ls: FakeServer, fetcher_for: Callable[..., Fetcher]
):
    ls.refuse_bearer = True
    fetcher = fetcher_for(FetchPolicy(ls.url, PAT, **FAST))
    with pytest.raises(ImageLoadError, match="HTTP 401 .* refused") as info:
        fetcher.fetch("/data/upload/1/x.png", LIMITS)
    assert not isinstance(info.value, TransientFetchError)
    assert ls.exchanges == 2 and ls.authorizations()[1::2] == ["Bearer access-1", "Bearer access-2"]


def test_refused_pat_is_permanent(ls: FakeServer, fetcher_for: Callable[..., Fetcher]):
    bad_pat = PAT[:-4] + "AAAA"
    fetcher = fetcher_for(FetchPolicy(ls.url, bad_pat, **FAST))
    with pytest.raises(ImageLoadError, match="refused the personal access token") as info:
        fetcher.fetch("/data/upload/1/x.png", LIMITS)
    assert not isinstance(info.value, TransientFetchError)
    assert ls.exchanges == 1 and ls.paths() == ["/api/token/refresh/"]
    assert bad_pat not in str(info.value)


@pytest.mark.parametrize(
    ("token", "hint"),
    [
        pytest.param(None, "no Label Studio token", id="no-token"),
        pytest.param("f" * 40, "legacy token was refused", id="wrong-legacy"),
    ],
)
def test_unauthorised_is_permanent_with_a_hint(
    ls: FakeServer, fetcher_for: Callable[..., Fetcher], token: str | None, hint: str
):
    fetcher = fetcher_for(FetchPolicy(ls.url, token, **FAST))
    with pytest.raises(ImageLoadError, match="HTTP 401") as info:
        fetcher.fetch("/data/upload/1/x.png", LIMITS)
    assert hint in info.value.reason and len(ls.seen) == 1


@pytest.mark.parametrize("uri", ["/data/upload/1/x.png", "/data/local-files/?d=a.png", "/x.png"])
def test_relative_url_without_ls_url_is_refused(fetcher_for: Callable[..., Fetcher], uri: str):
    with pytest.raises(ImageLoadError, match="no Label Studio URL is configured"):
        fetcher_for(FetchPolicy(None, LEGACY)).fetch(uri, LIMITS)


def test_disallowed_host_is_refused_before_any_request(
    ls: FakeServer,
    other: FakeServer,
    fetcher_for: Callable[..., Fetcher],
    monkeypatch: pytest.MonkeyPatch,
):
    fetcher = fetcher_for(FetchPolicy(ls.url, LEGACY, **FAST))
    with pytest.raises(ImageLoadError, match=ALLOWED_HOSTS_SETTING) as info:
        fetcher.fetch(f"{other.url}/img.png", LIMITS)
    assert repr(_host(other)) in info.value.reason and other.seen == []

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request was made")

    monkeypatch.setattr(requests.Session, "send", no_network)
    with pytest.raises(ImageLoadError, match="'images.example.invalid' is not allowed"):
        fetcher.fetch("https://images.example.invalid/a.png?X-Amz-Signature=s", LIMITS)


def test_redirect_to_disallowed_host_is_refused(
    ls: FakeServer, other: FakeServer, fetcher_for: Callable[..., Fetcher]
):
    ls.redirect_to = f"{other.url}/img.png?token=SECRET"
    fetcher = fetcher_for(FetchPolicy(ls.url, LEGACY, **FAST))
    with pytest.raises(ImageLoadError, match=f"redirected to {other.url}/img.png: host") as info:
        fetcher.fetch("/data/upload/redirect", LIMITS)
    assert other.seen == [] and "SECRET" not in str(info.value)


def test_auth_goes_only_to_label_studio(
    ls: FakeServer, other: FakeServer, fetcher_for: Callable[..., Fetcher]
):
    ls.redirect_to = f"{other.url}/photo.jpg"
    policy = FetchPolicy(ls.url, LEGACY, frozenset({_host(other)}), **FAST)
    fetcher = fetcher_for(policy)
    assert fetcher.fetch(f"{other.url}/img.png", LIMITS).original_hw == (6, 8)
    assert fetcher.fetch("/data/upload/redirect", LIMITS).original_hw == (4, 10)
    assert ls.authorizations() == [f"Token {LEGACY}"]
    assert other.paths() == ["/img.png", "/photo.jpg"]
    assert other.authorizations() == [None, None]


def test_netrc_and_url_credentials_are_not_sent(
    ls: FakeServer,
    other: FakeServer,
    fetcher_for: Callable[..., Fetcher],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    fetcher = fetcher_for(FetchPolicy(ls.url, LEGACY, frozenset({_host(other)}), **FAST))
    fetcher.fetch(f"{other.url}/img.png", LIMITS)
    with pytest.raises(ImageLoadError, match="has user info") as info:
        fetcher.fetch(f"http://user:pw@{_host(other)}/img.png", LIMITS)  # refused, not sent
    fetcher.fetch("/data/upload/1/x.png", LIMITS)
    assert other.authorizations() == [None] and ls.authorizations() == [f"Token {LEGACY}"]
    assert "pw" not in str(info.value)


def test_label_studio_host_with_user_info_gets_no_token(
    ls: FakeServer, fetcher_for: Callable[..., Fetcher]
):
    fetcher = fetcher_for(FetchPolicy(ls.url, PAT, **FAST))
    with pytest.raises(ImageLoadError, match="has user info"):
        fetcher.fetch(f"http://user@{_host(ls)}/data/upload/1/x.png", LIMITS)
    assert ls.seen == []  # refused before any request, the token exchange included


def test_label_studio_url_with_user_info_is_refused():
    with pytest.raises(ConfigError, match="no user info") as info:
        FetchPolicy(ls_url="http://admin:hunter2@127.0.0.1:8080")
    assert "hunter2" not in str(info.value)


def test_redirects_are_limited(ls: FakeServer, fetcher_for: Callable[..., Fetcher]):
    with pytest.raises(ImageLoadError, match="more than 3 redirects"):
        fetcher_for(FetchPolicy(ls.url, **FAST)).fetch(f"{ls.url}/loop", LIMITS)
    assert ls.paths() == ["/loop"] * 4


def test_not_found_is_permanent(ls: FakeServer, fetcher_for: Callable[..., Fetcher]):
    fetcher = fetcher_for(FetchPolicy(ls.url, **FAST))
    with pytest.raises(ImageLoadError, match="HTTP 404 Not Found") as info:
        fetcher.fetch(f"{ls.url}/gone.png?X-Amz-Credential=SECRET", LIMITS)
    assert not isinstance(info.value, TransientFetchError)
    assert info.value.source == f"{ls.url}/gone.png" and len(ls.seen) == 1


def test_unavailable_then_ok_is_retried(ls: FakeServer, fetcher_for: Callable[..., Fetcher]):
    ls.failures_left = 2
    pauses: list[float] = []
    fetcher = fetcher_for(FetchPolicy(ls.url, retries=3, backoff_s=0.5), sleep=pauses.append)
    assert fetcher.fetch(f"{ls.url}/flaky.png", LIMITS).original_hw == (6, 8)
    assert ls.paths() == ["/flaky.png"] * 3 and pauses == [0.5, 1.0]


def test_persistent_503_gives_up_with_transient_error(
    ls: FakeServer, fetcher_for: Callable[..., Fetcher]
):
    fetcher = fetcher_for(FetchPolicy(ls.url, **FAST))
    with pytest.raises(TransientFetchError, match=r"HTTP 503 .*gave up after 3 attempts"):
        fetcher.fetch(f"{ls.url}/unavailable.png", LIMITS)
    assert len(ls.seen) == 3


def test_connection_refused_is_transient(fetcher_for: Callable[..., Fetcher]):
    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as closed:
        port = closed.server_address[1]  # bound, then closed: nothing listens there
    fetcher = fetcher_for(FetchPolicy(f"http://127.0.0.1:{port}", retries=1, backoff_s=0.01))
    with pytest.raises(TransientFetchError, match="connection failed"):
        fetcher.fetch("/data/upload/1/x.png", LIMITS)


@pytest.mark.parametrize("path", ["/slow.png", "/drip.png"])
def test_slow_server_times_out(ls: FakeServer, fetcher_for: Callable[..., Fetcher], path: str):
    fetcher = fetcher_for(FetchPolicy(ls.url, timeout_s=0.2, retries=1, backoff_s=0.01))
    start = time.monotonic()
    with pytest.raises(TransientFetchError, match="timed out after 0.2 s"):
        fetcher.fetch(f"{ls.url}{path}", LIMITS)
    assert time.monotonic() - start < 1.5 and len(ls.seen) == 2


@pytest.mark.parametrize("path", ["/big.png", "/declared-big.png"])
def test_oversized_body_is_refused(ls: FakeServer, fetcher_for: Callable[..., Fetcher], path: str):
    fetcher = fetcher_for(FetchPolicy(ls.url, **FAST))
    with pytest.raises(ImageLoadError, match="over the 2000") as info:
        fetcher.fetch(f"{ls.url}{path}", ImageLimits(max_bytes=2000))
    assert not isinstance(info.value, TransientFetchError) and len(ls.seen) == 1


def test_non_image_body_is_refused(ls: FakeServer, fetcher_for: Callable[..., Fetcher]):
    with pytest.raises(ImageLoadError, match="not an image .*HTML page") as info:
        fetcher_for(FetchPolicy(ls.url, **FAST)).fetch(f"{ls.url}/page.html", LIMITS)
    assert not isinstance(info.value, TransientFetchError)


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    path = tmp_path / "root" / "a b.png"
    path.write_bytes(PNG)
    return path


def test_local_paths_need_permission(image_file: Path, fetcher_for: Callable[..., Fetcher]):
    refusing = fetcher_for(FetchPolicy())
    for uri in (os.path.relpath(image_file), image_file.as_uri()):
        with pytest.raises(ImageLoadError, match="local paths are not accepted"):
            refusing.fetch(uri, LIMITS)
    with pytest.raises(ImageLoadError, match="no Label Studio URL"):
        refusing.fetch(str(image_file), LIMITS)  # absolute: read as a Label Studio path
    allowing = fetcher_for(FetchPolicy(allow_local_paths=True))
    for uri in (str(image_file), image_file.as_uri()):
        assert allowing.fetch(uri, LIMITS).original_hw == (6, 8)


def test_local_paths_stay_inside_roots(image_file: Path, fetcher_for: Callable[..., Fetcher]):
    root = image_file.parent
    (root / "escape.png").symlink_to(root.parent / "outside.png")
    (root.parent / "outside.png").write_bytes(PNG)
    fetcher = fetcher_for(FetchPolicy(allow_local_paths=True, local_roots=(str(root),)))
    assert fetcher.fetch(str(image_file), LIMITS).original_hw == (6, 8)
    for uri in (root / ".." / "outside.png", root / "escape.png", root.parent / "outside.png"):
        with pytest.raises(ImageLoadError, match="outside the local roots"):
            fetcher.fetch(str(uri), LIMITS)


def test_tokens_never_appear_in_messages_or_logs(
    ls: FakeServer,
    other: FakeServer,
    fetcher_for: Callable[..., Fetcher],
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.DEBUG)
    ls.redirect_to = f"{other.url}/img.png"
    messages: list[str] = []
    for token in (LEGACY, PAT):
        policy = FetchPolicy(ls.url, token, timeout_s=0.1, retries=1, backoff_s=0.01)
        fetcher = fetcher_for(policy)
        messages.append(repr(policy))
        for uri in (
            "/data/upload/1/x.png",
            "/data/upload/redirect",
            "/data/upload/gone.png",
            f"{ls.url}/unavailable.png",
            f"{ls.url}/slow.png",
            f"{ls.url}/page.html",
        ):
            try:
                fetcher.fetch(uri, LIMITS)
            except ImageLoadError as exc:
                messages.append(str(exc))
        with pytest.raises(ImageLoadError) as info:
            fetcher.fetch("/data/upload/1/x.png", ImageLimits(max_bytes=10))
        messages.append(str(info.value))
    ls.refuse_bearer = True
    with pytest.raises(ImageLoadError, match="401") as info:
        fetcher.fetch("/data/upload/1/x.png", LIMITS)
    messages.append(str(info.value))
    assert len(messages) == 15 and ls.exchanges >= 2
    secrets = [LEGACY, PAT, *(f"access-{n}" for n in range(1, ls.exchanges + 1))]
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in secrets:
        assert all(secret not in message for message in messages), secret
        assert secret not in logged, secret


@pytest.mark.parametrize(
    ("url", "allowed", "expected"),
    [
        pytest.param("http://Example.com:80/a.png", {"example.com"}, True, id="default-http"),
        pytest.param("https://example.com/a.png", {"example.com:443"}, True, id="default-https"),
        pytest.param("http://example.com:8080/a", {"example.com"}, False, id="other-port"),
        pytest.param("http://example.com:8080/a", {"example.com:8080"}, True, id="port"),
        pytest.param("http://[::1]:8080/a", {"[::1]:8080"}, True, id="ipv6"),
        pytest.param("http://sub.example.com/a", {"example.com"}, False, id="subdomain"),
        pytest.param("ftp://example.com/a", {"example.com"}, False, id="ftp"),
    ],
)
def test_host_comparison(url: str, allowed: set[str], expected: bool):
    with Fetcher(FetchPolicy(allowed_hosts=frozenset(allowed))) as fetcher:
        assert fetcher.allows(url) is expected


def test_policy_validation():
    for bad in ("a.com/path", "user@a.com", "a.com:notaport", ""):
        with pytest.raises(ConfigError, match=ALLOWED_HOSTS_SETTING):
            FetchPolicy(allowed_hosts=frozenset({bad}))
    with pytest.raises(ConfigError, match="not an http"):
        FetchPolicy(ls_url="127.0.0.1:8080")
    assert LEGACY not in repr(FetchPolicy("http://ls", LEGACY))
    assert FetchPolicy(allowed_hosts={"a"}).allowed_hosts == frozenset({"a"})  # type: ignore[arg-type]


def test_settings_make_the_one_policy_of_workers_and_commands(tmp_path: Path):
    settings = WorkerSettings(
        ls_url="http://ls:8080",
        ls_token=LEGACY,
        ls_aliases=("http://alias:8080",),
        allowed_hosts=frozenset({"cdn.example"}),
        local_roots=(str(tmp_path),),
        ls_media=str(tmp_path),
        fetch_timeout_s=7.0,
    )
    _, alias = settings.ls_sites().sites
    policy = FetchPolicy.from_settings(settings, alias, budget_s=7.0)
    assert (policy.ls_url, policy.ls_aliases, policy.ls_token) == (
        "http://alias:8080",
        ("http://ls:8080",),
        LEGACY,
    )
    assert policy.allow_local_paths and policy.local_roots == (str(tmp_path),)
    assert policy.allowed_hosts == {"cdn.example"} and policy.ls_folders.media == str(tmp_path)
    assert (policy.timeout_s, policy.budget_s) == (7.0, 7.0)
    bare = FetchPolicy.from_settings(settings, None)  # no Label Studio: no token, no folders
    assert (bare.ls_url, bare.ls_token, bare.budget_s) == (None, None, None)
    assert not bare.ls_folders and bare.local_roots == (str(tmp_path),)


def test_a_closed_fetcher_opens_new_connections(
    ls: FakeServer, fetcher_for: Callable[..., Fetcher]
):
    fetcher = fetcher_for(FetchPolicy(ls.url, LEGACY, **FAST))
    fetcher.fetch("/data/upload/1/x.png", LIMITS)
    fetcher.close()
    assert fetcher.fetch("/data/upload/1/x.png", LIMITS).original_hw == (6, 8)
    assert ls.authorizations() == [f"Token {LEGACY}"] * 2
