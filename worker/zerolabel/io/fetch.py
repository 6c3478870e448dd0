"""Fetch task images: Label Studio URLs, allow-listed http(s) hosts and (for CLI jobs) local files.

What a URI may name is decided by a :class:`FetchPolicy`:

- ``/data/upload/...``, ``/data/local-files/?d=...`` and any other path starting with ``/`` are
  Label Studio URLs, joined to ``ls_url``.
- ``http(s)://`` URLs are fetched only from the Label Studio hosts (``ls_url`` and ``ls_aliases``)
  and ``allowed_hosts`` (hosts compared without scheme, ports 80 and 443 taken as the default);
  redirects are followed by hand and every target is checked again.
- Every http(s) URL is parsed once, by :func:`parse_target`, into a :class:`Target`: the policy
  checks that object and the request goes to the URL re-serialised from it. URLs with user info,
  backslashes, control characters, whitespace or %-escapes in the host part, dot segments, or
  that HTTP libraries would read differently, are refused before any request.
- Only image paths (``/data/upload/...`` and ``/data/local-files/...``) of a configured Label
  Studio origin get the token: never its API, never another host, also after redirects.
- Local paths and ``file://`` URLs only with ``allow_local_paths``, inside ``local_roots`` if given.
- Image URLs of a configured Label Studio whose folders are mounted here
  (:mod:`zerolabel.io.ls_folders`) are read from disk; the rest of this module's checks apply
  to the URL first.
  With no ``ls_url`` set, an absolute path outside ``/data/upload/`` and ``/data/local-files/``
  is a local path.

The Authorization header (a legacy token, or the access token a personal access token is
exchanged for) comes from :class:`~zerolabel.labelstudio.auth.LabelStudioAuth`, which gives it
only to URLs of the Label Studio origin; the retry policy and the transient statuses come from
the same module.

One deadline bounds each attempt: connecting, every redirect, the response headers and the body
together. Each socket read and write waits at most for what is left of it, so a server that
trickles its headers or body byte by byte fails at the fetch timeout, not later.
``FetchPolicy.budget_s`` bounds all attempts of one fetch together (queued jobs use it, so a dead
host costs about one timeout per job run).

Errors: :class:`TransientFetchError` (retried here, then raised: the job may be retried later)
and :class:`~zerolabel.errors.ImageLoadError` for everything a retry will not fix. Messages and this
module's logs never hold a token, and keep a URL's query string only for ``?d=`` of local-files
URLs (urllib3's own DEBUG log does print request paths with their query strings).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit, urlunsplit
from urllib.request import url2pathname

import requests
from requests.adapters import DEFAULT_POOLBLOCK, HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import DecodeError, LocationParseError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util import parse_url

from zerolabel import metrics
from zerolabel.errors import ConfigError, DiscoveryError, ImageLoadError
from zerolabel.io.images import ImageLimits, LoadedImage, decode, read_file
from zerolabel.io.ls_folders import LabelStudioFolders
from zerolabel.labelstudio.auth import (
    LS_TOKEN_SETTING,
    LS_URL_SETTING,
    TOKEN_REFRESH_PATH,
    TRANSIENT_STATUSES,
    LabelStudioAuth,
    LabelStudioSites,
    Origin,
    RetryPolicy,
    TokenExchangeError,
    plain_session,
)

logger = logging.getLogger(__name__)

ALLOWED_HOSTS_SETTING = "ZEROLABEL_ALLOWED_HOSTS"
"""Environment variable named in errors about hosts that are not allowed."""

MAX_REDIRECTS = 3

_LS_PREFIXES = ("/data/upload/", "/data/local-files/")
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9_.-]+|[0-9a-f:.]+")  # a name or IPv4 address; an IPv6 address


class TransientFetchError(ImageLoadError):
    """A failure that may pass (connection, timeout, HTTP 429 or 5xx), raised after the retries."""


class UnsafeURLError(ValueError):
    """An http(s) URL refused by :func:`parse_target`; the message says why (never the URL)."""


@dataclass(frozen=True)
class Target:
    """An http(s) URL parsed once: the policy checks this object, the request goes to ``url``.

    Attributes:
        scheme: ``http`` or ``https``.
        host: lower-case name or address (an IPv6 address without brackets).
        port: the port, the scheme's default filled in.
        path: the path as sent, percent-encoded.
        query: the query string as sent, percent-encoded (without ``?``).
        url: the request URL, re-serialised from the parts above; HTTP libraries read it back
            as the same scheme, host, port, path and query.
    """

    scheme: str
    host: str
    port: int
    path: str
    query: str
    url: str

    @property
    def origin(self) -> Origin:
        """Scheme, host and port: what the Label Studio sites are compared with."""
        return Origin(self.scheme, self.host, self.port)


def parse_target(url: str) -> Target:
    """Parse an absolute http(s) URL once, refusing what parsers could read differently.

    Refused: backslashes and control characters anywhere; user info, whitespace, %-escapes or
    non-ASCII characters in the host part; ``.`` or ``..`` path segments (also %-encoded); and
    any URL that ``urllib.parse`` and urllib3 (which requests uses to connect) do not read as
    the same scheme, host, port, path and query.

    Raises:
        UnsafeURLError: the reason, without the URL.
    """
    if "\\" in url:
        raise UnsafeURLError("has a backslash, which HTTP clients and servers read differently")
    if not url.isprintable():
        raise UnsafeURLError("has control characters or line breaks")
    try:
        parts = urlsplit(url)
        scheme, port = parts.scheme.lower(), parts.port
    except ValueError:
        raise UnsafeURLError("is not a valid URL (bad port or brackets)") from None
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeURLError("is not an http(s) URL")
    if "@" in parts.netloc:
        raise UnsafeURLError("has user info (user@host); give the URL without it")
    netloc = parts.netloc
    if not netloc.isascii() or "%" in netloc or any(c.isspace() for c in netloc):
        raise UnsafeURLError("has whitespace, %-escapes or non-ASCII characters in its host part")
    host = (parts.hostname or "").lower()
    if not _HOST.fullmatch(host) or port == 0:
        raise UnsafeURLError("has no valid host and port")
    path = parts.path or "/"
    if any(segment in (".", "..") for segment in unquote(path).split("/")):
        raise UnsafeURLError("has '.' or '..' path segments")
    authority = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        authority += f":{port}"
    wire = _as_requests_sends(urlunsplit((scheme, authority, path, parts.query, "")))
    sent = urlsplit(wire)
    port = _DEFAULT_PORTS[scheme] if port is None else port
    target = Target(scheme, host, port, sent.path, sent.query, wire)
    if not _read_alike(target) or _as_requests_sends(wire) != wire:
        raise UnsafeURLError("is read differently by HTTP libraries")
    return target


def _as_requests_sends(url: str) -> str:
    """``url`` as requests would send it (its quoting and normalisation)."""
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
    except (requests.RequestException, LocationParseError, ValueError):
        raise UnsafeURLError("is not a URL HTTP libraries accept") from None
    return str(prepared.url)


def _read_alike(target: Target) -> bool:
    """Whether urllib.parse and urllib3 both read ``target.url`` as ``target``'s parts."""
    try:
        split = urlsplit(target.url)
        urllib3_parts = parse_url(target.url)
        split_port = split.port
    except (ValueError, LocationParseError):
        return False
    default = _DEFAULT_PORTS[target.scheme]
    ours = (target.scheme, target.host, target.port, target.path, target.query)
    by_split = (
        split.scheme,
        split.hostname,
        default if split_port is None else split_port,
        split.path,
        split.query,
    )
    by_urllib3 = (
        urllib3_parts.scheme,
        (urllib3_parts.host or "").lower().removeprefix("[").removesuffix("]"),
        urllib3_parts.port or default,
        urllib3_parts.path,
        urllib3_parts.query or "",
    )
    return ours == by_split == by_urllib3 and urllib3_parts.auth is None


@dataclass(frozen=True)
class FetchPolicy:
    """Where images may come from, with which credentials, and how hard to try.

    Attributes:
        ls_url: Label Studio base URL, e.g. ``http://127.0.0.1:8080`` (a path prefix is kept).
        ls_token: a legacy API token or a personal access token; only sent to image paths of
            ``ls_url`` and ``ls_aliases``.
        allowed_hosts: further hosts for absolute http(s) URLs, as ``host`` or ``host:port``.
        allow_local_paths: accept local paths and ``file://`` URLs (CLI jobs).
        local_roots: when non-empty, local paths must resolve inside one of these directories.
        ls_aliases: other URLs of the same Label Studio (``ZEROLABEL_LABEL_STUDIO_ALIASES``):
            their hosts are allowed and their image paths get the token too.
        timeout_s: time allowed for one attempt: connect, redirects, headers and body together.
        retries: further attempts after a transient failure.
        backoff_s: the first pause between attempts; it doubles at each retry.
        budget_s: time allowed for all attempts of one fetch together, pauses included (no
            attempt starts, and no pause is taken, past it); None: no bound beyond the attempts.
        ls_folders: Label Studio's upload and local-files folders as mounted here; image URLs
            of ``ls_url`` and ``ls_aliases`` found there are read from disk.
    """

    ls_url: str | None = None
    ls_token: str | None = field(default=None, repr=False)
    allowed_hosts: frozenset[str] = frozenset()
    allow_local_paths: bool = False
    local_roots: tuple[str, ...] = ()
    ls_aliases: tuple[str, ...] = ()
    timeout_s: float = 20.0
    retries: int = 3
    backoff_s: float = 0.5
    budget_s: float | None = None
    ls_folders: LabelStudioFolders = LabelStudioFolders()

    def __post_init__(self) -> None:
        for name in ("allowed_hosts", "local_roots", "ls_aliases"):
            if isinstance(getattr(self, name), str):
                raise TypeError(f"FetchPolicy.{name} takes a collection of strings, not a string")
        object.__setattr__(self, "allowed_hosts", frozenset(self.allowed_hosts))
        object.__setattr__(self, "local_roots", tuple(self.local_roots))
        object.__setattr__(self, "ls_aliases", tuple(self.ls_aliases))
        if self.ls_url is not None or self.ls_aliases:
            LabelStudioSites.configure(self.ls_url, self.ls_aliases)
        _host_keys(self.allowed_hosts)
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise ConfigError("FetchPolicy needs timeout_s > 0, retries >= 0 and backoff_s >= 0")
        if self.budget_s is not None and self.budget_s <= 0:
            raise ConfigError("FetchPolicy needs budget_s > 0 (or None)")


def parse_allowed_hosts(value: str) -> frozenset[str]:
    """Parse a comma- or space-separated host list, as given in ZEROLABEL_ALLOWED_HOSTS."""
    hosts = frozenset(part for part in re.split(r"[,\s]+", value) if part)
    _host_keys(hosts)
    return hosts


class Fetcher:
    """Fetches images under one policy; holds its HTTP session and its Label Studio credentials.

    Not thread-safe: use one per thread (an RQ worker runs one job at a time). Close it, or use it
    as a context manager, to release its connections.
    """

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self.sites = LabelStudioSites.configure(policy.ls_url, policy.ls_aliases)
        self._auth = (
            LabelStudioAuth(policy.ls_url, policy.ls_token, clock=clock, aliases=policy.ls_aliases)
            if policy.ls_url
            else None
        )
        self._retry = RetryPolicy(policy.retries, policy.backoff_s)
        self._allowed = _host_keys(policy.allowed_hosts)
        self._allowed.update(_host_key(origin.host, origin.port) for origin in self.sites.origins)
        self._session: requests.Session | None = None
        self._clock = clock
        self._sleep = sleep

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session; a later fetch opens a new one."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def fetch(self, uri: str, limits: ImageLimits, *, max_side: int | None = None) -> LoadedImage:
        """Resolve, download (with retries) and decode one image.

        Args:
            uri: a Label Studio relative URL, an http(s) URL, or a local path / ``file://`` URL.
            limits: byte and pixel limits; the byte limit also stops the download.
            max_side: passed to :func:`zerolabel.io.images.decode`.

        Raises:
            TransientFetchError: a network failure that outlasted the retries.
            ImageLoadError: anything a retry would not fix.
        """
        target = self.resolve(uri)
        if isinstance(target, Path):
            with metrics.timed("fetch"):
                data, source, content_type = read_file(target, limits), str(target), ""
        else:
            source = _display(target.url)
            on_disk = self._on_disk(target)
            with metrics.timed("fetch"):
                if on_disk is not None:
                    data, content_type = _read_for(on_disk, source, limits), ""
                else:
                    data, content_type = self._download(target, limits)
        try:
            with metrics.timed("decode"):
                return decode(data, source, limits, max_side=max_side)
        except ImageLoadError as exc:
            if content_type.startswith("text/html"):
                raise ImageLoadError(
                    source, f"{exc.reason}; the server sent an HTML page"
                ) from None
            raise

    def fetch_bytes(self, uri: str, limits: ImageLimits) -> bytes:
        """The image's bytes exactly as served (or stored, for a local path), not decoded.

        Raises:
            TransientFetchError: a network failure that outlasted the retries.
            ImageLoadError: anything a retry would not fix.
        """
        target = self.resolve(uri)
        if isinstance(target, Path):
            return read_file(target, limits)
        on_disk = self._on_disk(target)
        if on_disk is not None:
            return _read_for(on_disk, _display(target.url), limits)
        return self._download(target, limits)[0]

    def _on_disk(self, target: Target) -> Path | None:
        """The file of a configured Label Studio's image URL in its mounted folders, or None."""
        folders = self.policy.ls_folders
        if not folders:
            return None
        for site in self.sites.sites:
            if site.origin == target.origin and site.serves_images_at(target.path):
                return folders.file_for(target.path.removeprefix(site.base_path), target.query)
        return None

    def resolve(self, uri: str) -> Target | Path:
        """The parsed URL or the local path ``uri`` names, refused if the policy forbids it."""
        uri = uri.strip()
        if not uri:
            raise ImageLoadError(repr(uri), "empty image URI")
        try:
            parts = urlsplit(uri)
        except ValueError:
            raise ImageLoadError(_display(uri), "not a valid URL (bad port or brackets)") from None
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            return self._checked(uri, uri)
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ImageLoadError(uri, "file:// URLs must name a local file (no remote host)")
            return self._local_path(Path(url2pathname(parts.path)), uri)
        if scheme:
            reason = f"unsupported URL scheme {scheme!r}: give a Label Studio or http(s) URL"
            raise ImageLoadError(_display(uri), reason)
        if uri.startswith("/") and (
            self._auth or uri.startswith(_LS_PREFIXES) or not self.policy.allow_local_paths
        ):
            return self._checked(self._ls_url(uri), uri)
        return self._local_path(Path(uri), uri)

    def allows(self, url: str) -> bool:
        """Whether the policy lets an absolute http(s) URL be fetched."""
        try:
            return self._allowed_target(parse_target(url))
        except UnsafeURLError:
            return False

    def sends_token(self, target: Target) -> bool:
        """Whether a request to ``target`` carries the Label Studio token.

        Only image paths of a configured Label Studio origin, and only with a token configured.
        """
        return (
            self._auth is not None
            and self.sites.may_send_token(target.origin, target.path)
            and self._auth.covers(target.url)
        )

    def _allowed_target(self, target: Target) -> bool:
        return _host_key(target.host, target.port) in self._allowed

    def _checked(self, url: str, source: str, *, redirected: bool = False) -> Target:
        """``url`` parsed once and checked against the allow-list; ImageLoadError if refused."""
        where = f"redirected to {_display(url)}: " if redirected else ""
        try:
            target = parse_target(url)
        except UnsafeURLError as exc:
            raise ImageLoadError(_display(source), f"{where}URL refused: it {exc}") from None
        if self._allowed_target(target):
            return target
        host = _host_key(target.host, target.port)
        raise ImageLoadError(
            _display(source),
            f"{where}host {host!r} is not allowed; add it to {ALLOWED_HOSTS_SETTING} "
            "(comma-separated host or host:port) to fetch images from it",
        )

    def _ls_url(self, path: str) -> str:
        primary = self.sites.primary
        if primary is None:
            raise ImageLoadError(
                _display(path),
                f"a Label Studio URL, but no Label Studio URL is configured (set {LS_URL_SETTING})",
            )
        return primary.url + path

    def _local_path(self, path: Path, uri: str) -> Path:
        if not self.policy.allow_local_paths:
            raise ImageLoadError(
                uri, "local paths are not accepted here; give a Label Studio or http(s) URL"
            )
        resolved = path.expanduser().resolve()
        roots = [Path(root).expanduser().resolve() for root in self.policy.local_roots]
        if roots and not any(resolved.is_relative_to(root) for root in roots):
            listed = ", ".join(str(root) for root in roots)
            raise ImageLoadError(uri, f"resolves to {resolved}, outside the local roots ({listed})")
        return resolved

    def _download(self, url: Target, limits: ImageLimits) -> tuple[bytes, str]:
        budget = self.policy.budget_s
        end = None if budget is None else self._clock() + budget
        attempts = 0

        def attempt() -> tuple[bytes, str]:
            nonlocal attempts
            attempts += 1
            deadline = self._clock() + self.policy.timeout_s
            return self._attempt(url, limits, deadline if end is None else min(deadline, end))

        def again(exc: DiscoveryError) -> bool:
            pause = self._retry.pause_s(attempts - 1)
            return _is_transient(exc) and (end is None or self._clock() + pause < end)

        try:
            return self._retry.run(attempt, transient=again, sleep=self._sleep)
        except TransientFetchError as exc:
            if attempts == 1:
                raise
            reason = f"{exc.reason} (gave up after {attempts} attempts)"
            raise TransientFetchError(exc.source, reason) from None

    def _attempt(self, url: Target, limits: ImageLimits, deadline: float) -> tuple[bytes, str]:
        with _socket_deadline(lambda: deadline - self._clock()):
            return self._redirects(url, limits, deadline)

    def _redirects(self, url: Target, limits: ImageLimits, deadline: float) -> tuple[bytes, str]:
        source = _display(url.url)
        current, hops = url, 0
        while True:
            with self._open(current, source, deadline) as response:
                status = response.status_code
                if status in _REDIRECTS and response.headers.get("Location"):
                    if hops == MAX_REDIRECTS:
                        raise ImageLoadError(source, f"more than {MAX_REDIRECTS} redirects")
                    current = self._redirected(current, response.headers["Location"], source)
                    logger.debug("%s redirects to %s", source, _display(current.url))
                    hops += 1
                    continue
                self._check_status(status, current, source)
                body = self._read_body(response, source, limits, deadline)
                return body, response.headers.get("Content-Type", "").lower()

    def _redirected(self, current: Target, location: str, source: str) -> Target:
        """The checked target of a redirect (parsed once, like any other URL)."""
        if "\\" in location or not location.isprintable():
            reason = "redirected to a URL with a backslash or control characters: refused"
            raise ImageLoadError(source, reason)
        return self._checked(urljoin(current.url, location), source, redirected=True)

    def _open(self, url: Target, source: str, deadline: float) -> requests.Response:
        """GET ``url``, with Label Studio's Authorization header when it may carry it."""
        get = partial(self._get, url.url, source, deadline)
        if self._auth is None or not self.sends_token(url):
            return get({})
        try:
            return self._auth.send(url.url, get, partial(self._post, source, deadline))
        except TokenExchangeError as exc:
            raise _exchange_error(exc, source) from None

    def _get(
        self, url: str, source: str, deadline: float, auth: dict[str, str]
    ) -> requests.Response:
        headers = {"Accept": "image/*, */*;q=0.5", **auth}
        logger.debug("GET %s", _display(url))
        return self._request("GET", url, source, deadline, headers=headers)

    def _post(
        self, source: str, deadline: float, url: str, body: dict[str, str]
    ) -> requests.Response:
        return self._request("POST", url, source, deadline, json=body)

    def _request(
        self, method: str, url: str, source: str, deadline: float, **kwargs: Any
    ) -> requests.Response:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise TransientFetchError(source, f"timed out after {self.policy.timeout_s:g} s")
        if self._session is None:
            self._session = plain_session()  # never credentials from ~/.netrc or user info
            for prefix in ("http://", "https://"):
                self._session.mount(prefix, _DeadlineAdapter())
        try:
            return self._session.request(
                method, url, stream=True, allow_redirects=False, timeout=remaining, **kwargs
            )
        except requests.Timeout:
            raise TransientFetchError(
                source, f"timed out after {self.policy.timeout_s:g} s"
            ) from None
        except requests.ConnectionError as exc:
            raise TransientFetchError(source, f"connection failed ({_root_cause(exc)})") from None
        except requests.RequestException as exc:
            raise ImageLoadError(source, f"request failed ({type(exc).__name__})") from None

    def _check_status(self, status: int, target: Target, source: str) -> None:
        if 200 <= status < 300:
            return
        url = target.url
        where = "" if _display(url) == source else f"at {_display(url)}"
        reason = f"{where + ': ' if where else ''}HTTP {status} {_phrase(status)}"
        if status in TRANSIENT_STATUSES:
            raise TransientFetchError(source, reason)
        if status in (401, 403) and self._auth is not None and self.sends_token(target):
            reason += f"; {self._auth.hint()}"
        elif status == 404 and "/data/local-files" in target.path:
            reason += "; is a Local Files storage connected for this path?"
        raise ImageLoadError(source, reason)

    def _read_body(
        self, response: requests.Response, source: str, limits: ImageLimits, deadline: float
    ) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limits.max_bytes:
            raise ImageLoadError(source, f"{declared} bytes, over the {limits.max_bytes} limit")
        body = bytearray()
        try:
            for chunk in _chunks(response.raw):
                body += chunk
                if len(body) > limits.max_bytes:
                    reason = f"over the {limits.max_bytes}-byte limit (stopped reading)"
                    raise ImageLoadError(source, reason)
                if self._clock() > deadline:
                    reason = f"timed out after {self.policy.timeout_s:g} s reading the body"
                    raise TransientFetchError(source, reason)
        except (ReadTimeoutError, TimeoutError):
            reason = f"timed out after {self.policy.timeout_s:g} s reading the body"
            raise TransientFetchError(source, reason) from None
        except DecodeError:
            raise ImageLoadError(source, "could not decode the Content-Encoding") from None
        except (Urllib3Error, requests.RequestException, OSError) as exc:
            reason = f"connection broken while reading ({_root_cause(exc)})"
            raise TransientFetchError(source, reason) from None
        return bytes(body)


_REMAINING: ContextVar[Callable[[], float] | None] = ContextVar("_REMAINING", default=None)
"""Seconds left to the current fetch attempt, for the sockets it reads and writes."""


@contextlib.contextmanager
def _socket_deadline(remaining: Callable[[], float]) -> Iterator[None]:
    token = _REMAINING.set(remaining)
    try:
        yield
    finally:
        _REMAINING.reset(token)


class _DeadlineSocket:
    """A connected socket whose reads and writes wait no longer than the fetch has left.

    Outside a fetch (an idle pooled connection) it behaves like the socket it wraps.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._timeout = sock.gettimeout()

    def settimeout(self, value: float | None) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def _arm(self) -> None:
        remaining = _REMAINING.get()
        if remaining is None:
            self._sock.settimeout(self._timeout)
            return
        left = remaining()
        if left <= 0:
            raise TimeoutError("the fetch deadline has passed")
        self._sock.settimeout(left if self._timeout is None else min(left, self._timeout))

    def recv_into(self, *args: Any) -> int:
        self._arm()
        return self._sock.recv_into(*args)

    def recv(self, *args: Any) -> bytes:
        self._arm()
        return self._sock.recv(*args)

    def send(self, *args: Any) -> int:
        self._arm()
        return self._sock.send(*args)

    def sendall(self, *args: Any) -> None:
        self._arm()
        self._sock.sendall(*args)

    def makefile(self, mode: str = "r", buffering: int | None = None, **kwargs: Any) -> Any:
        """Binary reads go through this object (http.client reads the response this way)."""
        if mode != "rb":
            return self._sock.makefile(mode, buffering, **kwargs)  # type: ignore[call-overload]
        raw = socket.SocketIO(self, "rb")  # type: ignore[arg-type]
        # as socket.makefile does: the descriptor stays open until this reader is closed too
        self._sock._io_refs += 1  # type: ignore[attr-defined]
        return io.BufferedReader(raw, buffering or io.DEFAULT_BUFFER_SIZE)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock = _DeadlineSocket(self.sock)


class _DeadlineHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock = _DeadlineSocket(self.sock)


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """Connections whose sockets keep to the deadline of the fetch under way."""

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = DEFAULT_POOLBLOCK, **kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _DeadlineHTTPPool,
            "https": _DeadlineHTTPSPool,
        }


def _is_transient(exc: DiscoveryError) -> bool:
    return isinstance(exc, TransientFetchError)


def _exchange_error(exc: TokenExchangeError, source: str) -> ImageLoadError:
    """The error of a fetch that needed a token exchange Label Studio did not grant."""
    what = f"token exchange at {TOKEN_REFRESH_PATH}"
    if exc.refused:
        return ImageLoadError(
            source,
            f"Label Studio refused the personal access token ({what}: HTTP {exc.status}); "
            f"create a new one and set {LS_TOKEN_SETTING}",
        )
    if 200 <= exc.status < 300:
        return ImageLoadError(source, f"{what}: {exc.detail}")
    reason = f"{what}: HTTP {exc.status} {_phrase(exc.status)}"
    return TransientFetchError(source, reason) if exc.transient else ImageLoadError(source, reason)


def _chunks(raw: object) -> Iterator[bytes]:
    """The decoded body as it arrives: each read waits for at most one socket read."""
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 < 2.3
        yield from raw.stream(_CHUNK, decode_content=True)  # type: ignore[attr-defined]
        return
    while chunk := read1(_CHUNK, decode_content=True):
        yield chunk


def _host_key(hostname: str, port: int | None) -> str:
    """``host`` or ``host:port``, lower-case; ports 80 and 443 count as the default."""
    host = hostname.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    return host if port in (None, 80, 443) else f"{host}:{port}"


def _host_keys(entries: Iterable[str]) -> set[str]:
    keys = set()
    for entry in entries:
        text = entry.strip()
        parts = urlsplit(text if "://" in text else f"//{text}")
        bad = ConfigError(f"{ALLOWED_HOSTS_SETTING}: {entry!r} is not a host or host:port")
        try:
            port = parts.port
        except ValueError:
            raise bad from None
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
            raise bad
        keys.add(_host_key(parts.hostname, port))
    return keys


def _display(url: str) -> str:
    """``url`` fit for messages and logs: no user info, no fragment, and no query string except
    the ``d`` parameter of local-files URLs (other queries may hold signed credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<not a valid URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = ""
    if parts.path.rstrip("/").endswith("/data/local-files"):
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k == "d"], safe="/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _root_cause(exc: BaseException) -> str:
    """The innermost OS error's text (e.g. "Connection refused"), never a URL or header."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        nested = getattr(seen, "reason", None)
        if not isinstance(nested, BaseException) and seen.args:
            nested = seen.args[0] if isinstance(seen.args[0], BaseException) else None
        seen = nested if isinstance(nested, BaseException) else seen.__cause__ or seen.__context__
    return type(exc).__name__


def _read_for(path: Path, source: str, limits: ImageLimits) -> bytes:
    """A file read in place of downloading ``source``; errors name the URL, not the path."""
    try:
        return read_file(path, limits)
    except ImageLoadError as exc:
        raise ImageLoadError(source, exc.reason) from None
