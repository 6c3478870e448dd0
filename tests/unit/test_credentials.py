"""Credentials that cannot leak: hostile listeners on 127.0.0.1 (and ::1) see no token.

Every test starts its own loopback servers: a fake Label Studio that serves images only with the
worker's token, and foreign listeners that record whatever reaches them.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import fakeredis
import pytest
from PIL import Image
from zerolabel.contract import Box, DiscoveryRequest, DiscoveryResult, DiscoverySpec, Region
from zerolabel.errors import ConfigError, ImageLoadError
from zerolabel.io.fetch import Fetcher, FetchPolicy
from zerolabel.io.images import ImageLimits, LoadedImage
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.queue import jobs
from zerolabel.queue.dispatch import ResultCache, make_queue
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.queue.service import PredictionService, ProjectContext
from zerolabel.queue.worker import run_worker
from zerolabel.settings import BackendSettings, WorkerSettings

from tests.servers import ReplyHandler, threaded_servers

WORKER_KEY = "0123456789abcdef0123456789abcdef01234567"  # the worker's LABEL_STUDIO_API_KEY
SETUP_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2V0dXAtdG9rZW4"  # from /setup
LIMITS = ImageLimits()
FAST: dict[str, Any] = {"timeout_s": 2.0, "retries": 0, "backoff_s": 0.0}
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="object"/></RectangleLabels>
</View>"""


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class Listener:
    """A loopback HTTP server: what it serves and every request it received."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)  # path with query -> PNG
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location
    token: str | None = None  # when set, /data/ paths need "Token <token>"

    def authorizations(self) -> list[str]:
        return [s.authorization for s in self.seen if s.authorization]


class _Handler(ReplyHandler):
    server: _Server

    def do_POST(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        state = self.server.state
        auth = self.headers.get("Authorization")
        state.seen.append(Seen(self.command, self.path, auth))
        if self.path in state.redirects:
            self.send_response(302)
            self.send_header("Location", state.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = urlsplit(self.path).path
        if state.token and path.startswith("/data/") and auth != f"Token {state.token}":
            return self._send(401, b'{"detail": "Authentication credentials were not provided."}')
        body = state.images.get(self.path)
        if body is None:
            return self._send(404, b"not found")
        self._send(200, body, "image/png")


class _Server(ThreadingHTTPServer):
    state: Listener


class _Server6(_Server):
    address_family = socket.AF_INET6


@pytest.fixture
def listen() -> Iterator[Callable[..., Listener]]:
    """Start listeners on 127.0.0.1 (or ``::1``), free ports; all stopped after the test."""
    with threaded_servers() as run:

        def start(host: str = "127.0.0.1") -> Listener:
            server = (_Server6 if ":" in host else _Server)((host, 0), _Handler)
            name = f"[{host}]" if ":" in host else host
            server.state = Listener(url=f"http://{name}:{server.server_address[1]}")
            run(server)
            return server.state

        yield start


@pytest.fixture
def ls(listen: Callable[..., Listener]) -> Listener:
    """The real Label Studio: serves one upload and one local file, only with the worker key."""
    server = listen()
    server.token = WORKER_KEY
    server.images["/data/upload/1/x.png"] = _png((8, 6))
    server.images["/data/local-files/?d=set1/photo.jpg"] = _png((8, 6))
    return server


@pytest.fixture
def foreign(listen: Callable[..., Listener]) -> Listener:
    """A hostile listener on 127.0.0.1: serves images, records every header it is sent."""
    server = listen()
    server.images["/data/upload/1/x.png"] = _png((1, 1))
    server.images["/data/local-files/?d=set1/photo.jpg"] = _png((1, 1))
    server.images["/img.png"] = _png((1, 1))
    return server


def _port(server: Listener) -> int:
    return int(urlsplit(server.url).port or 0)


def _fetcher(ls: Listener, *allowed: Listener) -> Fetcher:
    hosts = frozenset(urlsplit(server.url).netloc for server in allowed)
    return Fetcher(FetchPolicy(ls.url, WORKER_KEY, hosts, **FAST))


# --- (a) one URL parse: what the allow-list checks is where the request goes -------------------


def _confusing_urls(ls: Listener, foreign: Listener) -> list[str]:
    lsp, fp = _port(ls), _port(foreign)
    image = "/data/upload/1/x.png"
    return [
        f"http://127.0.0.1:{fp}\\@127.0.0.1:{lsp}{image}",
        f"http://127.0.0.1:{fp}\\\\@127.0.0.1:{lsp}{image}",
        f"http://127.0.0.1:{fp}%5C@127.0.0.1:{lsp}{image}",
        f"http://127.0.0.1:{fp}/\\@127.0.0.1:{lsp}{image}",
        f"http://127.0.0.1:{lsp}@127.0.0.1:{fp}{image}",
        f"http://user:{WORKER_KEY}@127.0.0.1:{fp}{image}",
        f"http://127.0.0.1:{fp}\t@127.0.0.1:{lsp}{image}",
        f"http://127.0.0.1:{fp}\n@127.0.0.1:{lsp}{image}",
        f"http://127.0.0.1:{fp} @127.0.0.1:{lsp}{image}",
        f"http://127.0.0.1:{fp}#@127.0.0.1:{lsp}{image}",
        f"http://127.0.0.1:{fp}?@127.0.0.1:{lsp}{image}",
        f"\\\\127.0.0.1:{fp}{image}",
        f"/\\127.0.0.1:{fp}{image}",
    ]


@pytest.mark.parametrize("foreign_allowed", [False, True], ids=["foreign-not-allowed", "allowed"])
def test_confusing_urls_never_reach_a_foreign_listener(
    ls: Listener, foreign: Listener, foreign_allowed: bool
):
    fetcher = _fetcher(ls, *([foreign] if foreign_allowed else []))
    with fetcher:
        for url in _confusing_urls(ls, foreign):
            try:
                image = fetcher.fetch(url, LIMITS)
            except ImageLoadError as exc:
                assert WORKER_KEY not in str(exc)
            else:  # fetched: it must have been what the URL names to every parser
                assert image.original_hw == (1, 1) and foreign_allowed, url
    assert foreign.authorizations() == []
    if not foreign_allowed:
        assert foreign.seen == []
    assert all(s.path == "/data/upload/1/x.png" or s.authorization is None for s in ls.seen)


def test_backslash_before_the_label_studio_host_is_refused_before_any_request(
    ls: Listener, foreign: Listener
):
    lsp, fp = _port(ls), _port(foreign)
    with _fetcher(ls, foreign) as fetcher:
        for url in (
            f"http://127.0.0.1:{fp}\\@127.0.0.1:{lsp}/data/upload/1/x.png",
            f"http://127.0.0.1:{fp}\\@127.0.0.1:{lsp}/data/local-files/?d=set1/photo.jpg",
        ):
            with pytest.raises(ImageLoadError, match="backslash"):
                fetcher.fetch(url, LIMITS)
    assert foreign.seen == [] and ls.seen == []


def test_ipv6_listener_behind_a_backslash_gets_nothing(
    ls: Listener, listen: Callable[..., Listener]
):
    try:
        hostile = listen("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    hostile.images["/data/upload/1/x.png"] = _png((1, 1))
    port = _port(hostile)
    with _fetcher(ls, hostile) as fetcher:
        for url in (
            f"http://[::1]:{port}\\@127.0.0.1:{_port(ls)}/data/upload/1/x.png",
            f"http://127.0.0.1:{_port(ls)}@[::1]:{port}/data/upload/1/x.png",
        ):
            with pytest.raises(ImageLoadError, match="backslash|user info"):
                fetcher.fetch(url, LIMITS)
    assert hostile.seen == []


def test_a_redirect_with_a_backslash_is_not_followed(ls: Listener, foreign: Listener):
    ls.redirects["/data/upload/1/moved.png"] = (
        f"http://127.0.0.1:{_port(foreign)}\\@127.0.0.1:{_port(ls)}/data/upload/1/x.png"
    )
    with _fetcher(ls) as fetcher, pytest.raises(ImageLoadError, match="backslash"):
        fetcher.fetch("/data/upload/1/moved.png", LIMITS)
    assert foreign.seen == []


# --- (c) only image paths of a configured origin get the token -------------------------------


def test_a_redirect_from_an_allowed_host_to_the_label_studio_api_gets_no_token(
    ls: Listener, foreign: Listener
):
    foreign.redirects["/moved.png"] = f"{ls.url}/api/projects/"
    ls.redirects["/data/upload/1/api.png"] = "/api/projects/?page=1"
    with _fetcher(ls, foreign) as fetcher:
        for uri in (f"{foreign.url}/moved.png", "/data/upload/1/api.png", f"{ls.url}/api/users/"):
            with pytest.raises(ImageLoadError, match="404"):
                fetcher.fetch(uri, LIMITS)
    api = [s for s in ls.seen if s.path.startswith("/api/")]
    assert [s.path for s in api] == ["/api/projects/", "/api/projects/?page=1", "/api/users/"]
    assert [s.authorization for s in api] == [None, None, None]
    assert ls.authorizations() == [f"Token {WORKER_KEY}"]  # the one image path asked


def test_dot_segments_cannot_turn_an_image_path_into_an_api_path(ls: Listener):
    with _fetcher(ls) as fetcher:
        for uri in (
            "/data/upload/../../api/projects/",
            "/data/upload/%2e%2e/%2E%2E/api/projects/",
            f"{ls.url}/data/local-files/../../api/projects/",
        ):
            with pytest.raises(ImageLoadError, match="'..' path segments"):
                fetcher.fetch(uri, LIMITS)
    assert ls.seen == []


def test_image_paths_get_the_token_on_the_label_studio_and_its_aliases_only(
    ls: Listener, listen: Callable[..., Listener], foreign: Listener
):
    alias = listen()  # another name of the same Label Studio, configured as such
    alias.token = WORKER_KEY
    alias.images["/data/upload/1/x.png"] = _png((8, 6))
    policy = FetchPolicy(
        ls.url,
        WORKER_KEY,
        frozenset({urlsplit(foreign.url).netloc}),
        ls_aliases=(alias.url,),
        **FAST,
    )
    with Fetcher(policy) as fetcher:
        for uri in ("/data/upload/1/x.png", f"{alias.url}/data/upload/1/x.png"):
            assert fetcher.fetch(uri, LIMITS).original_hw == (6, 8)
        assert fetcher.fetch(f"{foreign.url}/data/upload/1/x.png", LIMITS).original_hw == (1, 1)
    assert ls.authorizations() == alias.authorizations() == [f"Token {WORKER_KEY}"]
    assert foreign.authorizations() == []


# --- (b) /setup: the hostname is checked; its token is never used -----------------------------


def _service(ls: Listener | None, redis: Any = None, **env: str) -> PredictionService:
    values = {"ZEROLABEL_WAIT_TIMEOUT_S": "0.05", **env}
    if ls is not None:
        values |= {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": WORKER_KEY}
    return PredictionService(BackendSettings.from_env(values), redis or fakeredis.FakeRedis())


def test_setup_with_a_foreign_hostname_is_refused_naming_the_configured_label_studio(
    ls: Listener, foreign: Listener
):
    service = _service(ls)
    with pytest.raises(ConfigError) as info:
        service.context(foreign.url, ProjectOptions())
    message = str(info.value)
    assert f"hostname {foreign.url} is not the configured Label Studio" in message
    assert f"LABEL_STUDIO_URL={ls.url}" in message and "ZEROLABEL_LABEL_STUDIO_ALIASES" in message
    for hostname in (
        f"http://user@{urlsplit(ls.url).netloc}",
        f"https://{urlsplit(ls.url).netloc}",
    ):
        with pytest.raises(ConfigError, match="is not the configured Label Studio"):
            service.context(hostname, ProjectOptions())


@pytest.mark.parametrize(
    ("configured", "aliases", "hostname", "expected"),
    [
        pytest.param("http://ls", "", "http://LS:80/", "http://ls", id="default-port"),
        pytest.param("https://ls:443", "", "https://ls", "https://ls:443", id="https-default"),
        pytest.param("http://ls:8080", "", "", None, id="empty"),
        pytest.param(
            "http://ls:8080",
            "http://localhost:8080, http://127.0.0.1:8080",
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080",
            id="alias",
        ),
    ],
)
def test_setup_hostnames_of_the_configured_label_studio_are_accepted(
    configured: str, aliases: str, hostname: str, expected: str | None
):
    env = {"LABEL_STUDIO_URL": configured, "ZEROLABEL_LABEL_STUDIO_ALIASES": aliases}
    service = PredictionService(BackendSettings.from_env(env), fakeredis.FakeRedis())
    options = ProjectOptions.parse({"method": "maskcut"})
    context = service.context(hostname, options)
    assert context.hostname == expected and context.options == options


def test_without_label_studio_url_a_setup_hostname_is_not_kept(foreign: Listener):
    service = _service(None)
    assert service.context(foreign.url, ProjectOptions()).hostname is None
    redis = fakeredis.FakeRedis()
    service = _service(None, redis)
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/x.png"}}]
    service.predict(tasks, CONFIG, service.context(foreign.url, ProjectOptions()))
    (job,) = make_queue(redis, service.settings.discovery.queue).jobs
    assert job.args[0]["ls_url"] is None
    runtime = WorkerRuntime(WorkerSettings())
    answer = runtime.discover(DiscoveryRequest.from_dict(job.args[0]))
    assert answer.error and "set LABEL_STUDIO_URL" in answer.error and foreign.seen == []


def test_aliases_need_a_label_studio_url_and_must_be_urls_a_token_may_go_to():
    with pytest.raises(ConfigError, match="LABEL_STUDIO_URL, which is not set"):
        WorkerSettings.from_env({"ZEROLABEL_LABEL_STUDIO_ALIASES": "http://ls:8080"})
    for bad in ("http://a:1\\@b", "http://user:pw@ls:8080", "ls:8080", "http://ls/?x=1"):
        env = {"LABEL_STUDIO_URL": "http://ls:8080", "ZEROLABEL_LABEL_STUDIO_ALIASES": bad}
        with pytest.raises(ConfigError, match="ZEROLABEL_LABEL_STUDIO_ALIASES") as info:
            WorkerSettings.from_env(env)
        assert "pw" not in str(info.value)
    with pytest.raises(ConfigError, match="LABEL_STUDIO_URL"):
        WorkerSettings.from_env({"LABEL_STUDIO_URL": "http://127.0.0.1:1\\@ls"})


class SizeRunner:
    """Stands in for a model: one region covering the whole image, so results show its size."""

    def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
        return [[Region(Box(0, 0, *i.original_hw[::-1]), 1.0, "lost")] for i in images]


def _worker(settings: WorkerSettings, redis: Any) -> WorkerRuntime:
    runtime = WorkerRuntime(settings, redis)
    runtime.runner = lambda spec: SizeRunner()  # type: ignore[method-assign]
    return runtime


def _run_jobs(redis: Any, runtime: WorkerRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every queued job in this process, as a worker would."""
    monkeypatch.setattr(jobs, "get_runtime", lambda: runtime)
    run_worker(redis, runtime.settings.queue, burst=True, with_scheduler=False)


def test_no_token_reaches_a_foreign_listener_through_requests_built_after_setup(
    ls: Listener, foreign: Listener, monkeypatch: pytest.MonkeyPatch
):
    redis = fakeredis.FakeRedis()
    service = _service(ls, redis)
    tasks = [{"id": 7, "data": {"image": "/data/upload/1/x.png"}}]
    with pytest.raises(ConfigError):
        service.context(foreign.url, ProjectOptions())
    # A context built without the check (an older backend) is checked again at /predict ...
    stale = ProjectContext(foreign.url, ProjectOptions())
    assert not hasattr(stale, "access_token")  # a context holds no credentials
    with pytest.raises(ConfigError, match="is not the configured Label Studio"):
        service.predict(tasks, CONFIG, stale)
    # ... and the accepted one queues a request naming the configured Label Studio, no token.
    service.predict(tasks, CONFIG, service.context("", ProjectOptions()))
    worker = _worker(WorkerSettings(ls_url=ls.url, ls_token=WORKER_KEY), redis)
    _run_jobs(redis, worker, monkeypatch)
    entry = service.predict(tasks, CONFIG, service.context(ls.url, ProjectOptions()))[0]
    assert entry["result"][0]["original_width"] == 8  # the real image, fetched with the key
    assert foreign.seen == []
    assert ls.authorizations() == [f"Token {WORKER_KEY}"]
    # A request naming the foreign host (a forged job) is refused by the worker, per task.
    forged = DiscoveryRequest(DiscoverySpec(), "/data/upload/1/x.png", 8, foreign.url)
    answer = worker.discover(forged)
    assert answer.error and "not the one this worker is configured for" in answer.error
    assert foreign.seen == []


def test_a_setup_hostname_never_widens_the_image_allow_list(ls: Listener, foreign: Listener):
    service = _service(ls)
    with pytest.raises(ConfigError):
        service.context(foreign.url, ProjectOptions())
    worker = WorkerRuntime(WorkerSettings(ls_url=ls.url, ls_token=WORKER_KEY))
    for image in (f"{foreign.url}/img.png", "http://127.0.0.1:6379/"):
        answer = worker.discover(DiscoveryRequest(DiscoverySpec(), image, 1, foreign.url))
        assert answer.error and "is not allowed" in answer.error
    assert foreign.seen == []


# --- (d) results keyed by the image's origin ---------------------------------------------------


def test_the_same_relative_path_on_two_origins_gives_each_its_own_result(
    ls: Listener, listen: Callable[..., Listener], monkeypatch: pytest.MonkeyPatch
):
    other = listen()  # a second configured name whose server has another image at that path
    other.token = WORKER_KEY
    other.images["/data/local-files/?d=set1/photo.jpg"] = _png((1, 1))
    env = {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": WORKER_KEY,
        "ZEROLABEL_LABEL_STUDIO_ALIASES": other.url,
        "ZEROLABEL_WAIT_TIMEOUT_S": "0.05",
    }
    redis = fakeredis.FakeRedis()
    service = PredictionService(BackendSettings.from_env(env), redis)
    worker = _worker(WorkerSettings.from_env(env), redis)
    tasks = [{"id": 1, "data": {"image": "/data/local-files/?d=set1/photo.jpg"}}]
    export = "/api/projects/1/export?exportType=JSON&download_all_tasks=true&ids%5B%5D=1"
    stored = [{**tasks[0], "project": 1, "predictions": []}]
    ls.images[export] = json.dumps(stored).encode()  # the task, read through its project
    contexts = [service.context(url, ProjectOptions(), 1) for url in (other.url, ls.url)]
    for context in contexts:  # LS asks, gets "late", the worker runs, LS asks again
        service.predict(tasks, CONFIG, context)
        _run_jobs(redis, worker, monkeypatch)
    sizes = [
        service.predict(tasks, CONFIG, context)[0]["result"][0]["original_width"]
        for context in contexts
    ]
    assert sizes == [1, 8]
    images = [[s for s in server.seen if s.path.startswith("/data/")] for server in (other, ls)]
    assert len(images[0]) == len(images[1]) == 1  # each computed once, from its own origin
    assert len(other.seen) == 1  # late predictions are written to LABEL_STUDIO_URL only:
    written = {"/api/projects/1/export", "/api/predictions"}  # the task checked, then posted
    assert {s.path.split("?")[0] for s in ls.seen} == {"/data/local-files/", *written}


def test_result_cache_keys_hold_an_origin_digest_and_never_cross_origins():
    redis = fakeredis.FakeRedis()
    cache = ResultCache(redis, 60)
    region = Region(Box(0, 0, 8, 6), 1.0, "lost")
    result = DiscoveryResult("/data/upload/1/x.png", (6, 8), [region], "v1")
    cache.put(result, "http://ls:8080", "f" * 64)
    assert cache.get("v1", "http://ls:8080", "f" * 64) == result
    assert cache.get("v1", "http://evil:8080", "f" * 64) is None
    (key,) = redis.keys("zerolabel:result:*")
    prefix, version, digest, sha = key.decode().rsplit(":", 3)
    assert (prefix, version, sha) == ("zerolabel:result", "v1", "f" * 64)
    assert len(digest) == 16 and "ls" not in digest


def test_request_payloads_hold_no_token(ls: Listener):
    redis = fakeredis.FakeRedis()
    service = _service(ls, redis)
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/x.png"}}]
    service.predict(tasks, CONFIG, ProjectContext(ls.url, ProjectOptions()))
    (job,) = make_queue(redis, service.settings.discovery.queue).jobs
    payload = json.dumps(job.args[0])
    assert SETUP_JWT not in payload and WORKER_KEY not in payload
    assert job.args[0]["ls_url"] == ls.url
