"""Fetch task images: Label Studio URLs, allow-listed http(s) hosts and (for CLI jobs) local files.

What a URI may name is decided by a :class:`FetchPolicy`; a worker or a CLI command builds its
own with :meth:`FetchPolicy.from_settings`:

- ``/data/upload/...``, ``/data/local-files/?d=...`` and any other path starting with ``/`` are
  Label Studio URLs, joined to ``ls_url``. With no ``ls_url`` set, an absolute path outside
  ``/data/upload/`` and ``/data/local-files/`` is a local path.
- Every http(s) URL is parsed once, by :func:`parse_http_url`, into a :class:`ParsedURL`; the
  request goes to the URL re-serialised from that parse. URLs with user info, backslashes,
  control characters, whitespace or %-escapes in the host part, dot segments, or that HTTP
  libraries would read differently, are refused before any request.
- Then one object, the policy's :class:`~zerolabel.sites.Destinations`, answers for that URL
  (and for each redirect, followed by hand): refused, unless its host is a Label Studio one
  (``ls_url``, ``ls_aliases``) or in ``allowed_hosts``; it carries the token only when it is an
  image path (``/data/upload/...``, ``/data/local-files/...``) of a configured origin, never its
  API, never another host; and such an image is read from disk when Label Studio's folders are
  mounted here (:mod:`zerolabel.io.ls_folders`).
- Local paths and ``file://`` URLs only with ``allow_local_paths``, inside ``local_roots`` if given.

The Authorization header (a legacy token, or the access token a personal access token is
exchanged for) is added by :class:`~zerolabel.labelstudio.auth.LabelStudioAuth`, a requests auth
flow. Transient failures (connection, timeout, :data:`~zerolabel.transport.TRANSIENT_STATUSES`)
are retried by urllib3, through the session's :class:`~zerolabel.io.deadline.BudgetRetries`; a
body cut short after the headers, which urllib3 cannot retry, takes the same retries here. One
deadline bounds each attempt, the body included (:mod:`zerolabel.io.deadline`);
``FetchPolicy.budget_s`` bounds all attempts of one fetch together (queued jobs use it, so a
dead host costs about one timeout per job run).

Errors: :class:`TransientFetchError` (retried here, then raised: the job may be retried later)
and :class:`~zerolabel.errors.ImageLoadError` for everything a retry will not fix. Messages and
this module's logs never hold a token, and keep a URL's query string only for ``?d=`` of
local-files URLs; urllib3's own logs name request paths with their query strings (its DEBUG log
of each request, its WARNING when it retries after a connection failure).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit, urlunsplit
from urllib.request import url2pathname

import requests
from urllib3.exceptions import DecodeError, LocationParseError, MaxRetryError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from zerolabel import metrics
from zerolabel.errors import (
    ConfigError,
    ImageLoadError,
    TokenExchangeError,
    TransientFetchError,
    UnsafeURLError,
)
from zerolabel.io.deadline import Attempts, BudgetRetries, DeadlineAdapter
from zerolabel.io.images import ImageLimits, LoadedImage, decode, read_file
from zerolabel.io.ls_folders import LabelStudioFolders
from zerolabel.labelstudio.auth import TOKEN_REFRESH_PATH, LabelStudioAuth
from zerolabel.sites import (
    ALLOWED_HOSTS_SETTING,
    DEFAULT_PORTS,
    IMAGE_PATH_PREFIXES,
    LOCAL_FILES_PATH,
    LS_TOKEN_SETTING,
    LS_URL_SETTING,
    Destinations,
    LabelStudioSite,
    LabelStudioSites,
    Origin,
    Route,
    host_key,
)
from zerolabel.transport import TRANSIENT_STATUSES, plain_session, root_cause, timed_out

if TYPE_CHECKING:
    from zerolabel.settings import WorkerSettings

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3

_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024
_HOST = re.compile(r"[a-z0-9_.-]+|[0-9a-f:.]+")  # a name or IPv4 address; an IPv6 address


@dataclass(frozen=True)
class ParsedURL:
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


def parse_http_url(url: str) -> ParsedURL:
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
    if scheme not in DEFAULT_PORTS:
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
    if port is not None and port != DEFAULT_PORTS[scheme]:
        authority += f":{port}"
    wire = _as_requests_sends(urlunsplit((scheme, authority, path, parts.query, "")))
    sent = urlsplit(wire)
    port = DEFAULT_PORTS[scheme] if port is None else port
    parsed = ParsedURL(scheme, host, port, sent.path, sent.query, wire)
    if not _read_alike(parsed) or _as_requests_sends(wire) != wire:
        raise UnsafeURLError("is read differently by HTTP libraries")
    return parsed


def _as_requests_sends(url: str) -> str:
    """``url`` as requests would send it (its quoting and normalisation)."""
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
    except (requests.RequestException, LocationParseError, ValueError):
        raise UnsafeURLError("is not a URL HTTP libraries accept") from None
    return str(prepared.url)


def _read_alike(parsed: ParsedURL) -> bool:
    """Whether urllib.parse and urllib3 both read ``parsed.url`` as ``parsed``'s parts."""
    try:
        split = urlsplit(parsed.url)
        urllib3_parts = parse_url(parsed.url)
        split_port = split.port
    except (ValueError, LocationParseError):
        return False
    default = DEFAULT_PORTS[parsed.scheme]
    ours = (parsed.scheme, parsed.host, parsed.port, parsed.path, parsed.query)
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
        self.destinations()  # a URL credentials may not go to, a malformed host
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise ConfigError("FetchPolicy needs timeout_s > 0, retries >= 0 and backoff_s >= 0")
        if self.budget_s is not None and self.budget_s <= 0:
            raise ConfigError("FetchPolicy needs budget_s > 0 (or None)")

    @classmethod
    def from_settings(
        cls,
        settings: WorkerSettings,
        site: LabelStudioSite | None,
        *,
        budget_s: float | None = None,
    ) -> FetchPolicy:
        """The policy of a worker's or a CLI command's fetcher, from its settings.

        The one place settings become a policy: the Label Studio token, the allowed hosts, the
        local roots (local paths are accepted inside them once any is set), Label Studio's
        mounted folders and the fetch timeout. Call it at start too: it fails on what no fetch
        could serve.

        Args:
            settings: the process's settings.
            site: the configured Label Studio site relative task URLs are joined to; the other
                configured sites are its aliases. None: no Label Studio (no token, no folders).
            budget_s: see the attribute (queued jobs pass the fetch timeout: RQ does the
                re-runs).

        Raises:
            ConfigError: a Label Studio folder that is not a folder, or a setting
                :class:`FetchPolicy` refuses.
        """
        folders = LabelStudioFolders(settings.ls_media, settings.ls_files_root)
        folders.check()
        policy = cls(
            allowed_hosts=settings.allowed_hosts,
            allow_local_paths=bool(settings.local_roots),
            local_roots=settings.local_roots,
            timeout_s=settings.fetch_timeout_s,
            budget_s=budget_s,
        )
        if site is None:
            return policy
        others = tuple(s.url for s in settings.ls_sites().sites if s != site)
        return dataclasses.replace(
            policy,
            ls_url=site.url,
            ls_token=settings.ls_token,
            ls_aliases=others,
            ls_folders=folders,
        )

    def destinations(self) -> Destinations:
        """Where requests may go, and which carry the token (see :mod:`zerolabel.sites`).

        Raises:
            ConfigError: a Label Studio URL credentials may not go to, or a malformed host.
        """
        sites = LabelStudioSites.configure(self.ls_url, self.ls_aliases)
        return Destinations(sites, self.allowed_hosts)


@dataclass(frozen=True)
class _Located:
    """An http(s) URL the policy allows, with where it leads."""

    parsed: ParsedURL
    route: Route

    @property
    def url(self) -> str:
        """The URL the request goes to."""
        return self.parsed.url


class _Cut(Exception):
    """A failure urllib3 did not see (a body cut short, a token exchange that may pass): the
    fetch's own retries decide whether it is tried again."""

    def __init__(self, error: Exception, source: str, url: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.source = source
        self.url = url
        self.reason = reason


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
        self.destinations = policy.destinations()
        self.sites = self.destinations.sites
        self._clock = clock
        self._sleep = sleep
        self._adapter = DeadlineAdapter()
        self._session = plain_session(self._adapter)  # no credentials from ~/.netrc
        self._auth = (
            LabelStudioAuth(
                self.sites,
                policy.ls_token,
                images_only=True,
                session=self._session,
                timeout_s=policy.timeout_s,
                clock=clock,
            )
            if self.sites.primary is not None
            else None
        )

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
        """Close the HTTP connections; a later fetch opens new ones."""
        self._session.close()

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
        located = self._locate(uri)
        if isinstance(located, Path):
            with metrics.timed("fetch"):
                data, source, content_type = read_file(located, limits), str(located), ""
        else:
            source = _display(located.url)
            on_disk = self._on_disk(located)
            with metrics.timed("fetch"):
                if on_disk is not None:
                    data, content_type = _read_for(on_disk, source, limits), ""
                else:
                    data, content_type = self._download(located, limits)
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
        located = self._locate(uri)
        if isinstance(located, Path):
            return read_file(located, limits)
        on_disk = self._on_disk(located)
        if on_disk is not None:
            return _read_for(on_disk, _display(located.url), limits)
        return self._download(located, limits)[0]

    def allows(self, url: str) -> bool:
        """Whether the policy lets an absolute http(s) URL be fetched."""
        try:
            parsed = parse_http_url(url)
        except UnsafeURLError:
            return False
        return self.destinations.route(parsed.origin, parsed.path) is not None

    def _locate(self, uri: str) -> _Located | Path:
        """The allowed URL or the local path ``uri`` names, refused if the policy forbids it."""
        uri = uri.strip()
        if not uri:
            raise ImageLoadError(repr(uri), "empty image URI")
        try:
            parts = urlsplit(uri)
        except ValueError:
            raise ImageLoadError(_display(uri), "not a valid URL (bad port or brackets)") from None
        scheme = parts.scheme.lower()
        if scheme in DEFAULT_PORTS:
            return self._checked(uri, uri)
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ImageLoadError(uri, "file:// URLs must name a local file (no remote host)")
            return self._local_path(Path(url2pathname(parts.path)), uri)
        if scheme:
            reason = f"unsupported URL scheme {scheme!r}: give a Label Studio or http(s) URL"
            raise ImageLoadError(_display(uri), reason)
        if uri.startswith("/") and (
            self.sites.primary is not None
            or uri.startswith(IMAGE_PATH_PREFIXES)
            or not self.policy.allow_local_paths
        ):
            return self._checked(self._ls_url(uri), uri)
        return self._local_path(Path(uri), uri)

    def _checked(self, url: str, source: str, *, redirected: bool = False) -> _Located:
        """``url`` parsed once and routed by the policy; ImageLoadError if refused."""
        where = f"redirected to {_display(url)}: " if redirected else ""
        try:
            parsed = parse_http_url(url)
        except UnsafeURLError as exc:
            raise ImageLoadError(_display(source), f"{where}URL refused: it {exc}") from None
        route = self.destinations.route(parsed.origin, parsed.path)
        if route is not None:
            return _Located(parsed, route)
        host = host_key(parsed.host, parsed.port)
        raise ImageLoadError(
            _display(source),
            f"{where}host {host!r} is not allowed; add it to {ALLOWED_HOSTS_SETTING} "
            "(comma-separated host or host:port) to fetch images from it",
        )

    def _on_disk(self, located: _Located) -> Path | None:
        """The file of a configured Label Studio's image URL in its mounted folders, or None."""
        folders = self.policy.ls_folders
        if not folders or located.route.image_path is None:
            return None
        return folders.file_for(located.route.image_path, located.parsed.query)

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

    def _download(self, located: _Located, limits: ImageLimits) -> tuple[bytes, str]:
        """The body and its content type, after the retries the policy allows."""
        policy = self.policy
        attempts = Attempts(policy.timeout_s, policy.budget_s, self._clock)
        self._adapter.max_retries = BudgetRetries.of(
            attempts, policy.retries, policy.backoff_s, sleep=self._sleep
        )
        with attempts.bounded():
            while True:
                try:
                    return self._attempt(located, limits, attempts)
                except _Cut as cut:
                    self._adapter.max_retries = self._again(cut, attempts)

    def _again(self, cut: _Cut, attempts: Attempts) -> Retry:
        """The retry state after a failure urllib3 did not see, once its pause is taken.

        Raises:
            TransientFetchError: no attempt is left.
        """
        try:
            retry = self._adapter.max_retries.increment("GET", cut.url, error=cut.error)
        except MaxRetryError:
            raise TransientFetchError(cut.source, cut.reason + _gave_up(attempts)) from None
        retry.sleep()
        return retry

    def _attempt(
        self, located: _Located, limits: ImageLimits, attempts: Attempts
    ) -> tuple[bytes, str]:
        """One attempt: the request, the redirects it is sent on, the body."""
        source = _display(located.url)
        current, hops = located, 0
        while True:
            with self._open(current, source, attempts) as response:
                retries = getattr(response.raw, "retries", None)
                if isinstance(retries, Retry):  # the failures so far count for what follows
                    self._adapter.max_retries = retries
                status, location = response.status_code, response.headers.get("Location")
                if status in _REDIRECTS and location:
                    if hops == MAX_REDIRECTS:
                        raise ImageLoadError(source, f"more than {MAX_REDIRECTS} redirects")
                    current = self._redirected(current, location, source)
                    logger.debug("%s redirects to %s", source, _display(current.url))
                    hops += 1
                    continue
                self._check_status(status, current, source, attempts)
                body = self._read_body(response, current, source, limits, attempts)
                return body, response.headers.get("Content-Type", "").lower()

    def _redirected(self, current: _Located, location: str, source: str) -> _Located:
        """The checked target of a redirect (parsed once, like any other URL)."""
        if "\\" in location or not location.isprintable():
            reason = "redirected to a URL with a backslash or control characters: refused"
            raise ImageLoadError(source, reason)
        return self._checked(urljoin(current.url, location), source, redirected=True)

    def _open(self, located: _Located, source: str, attempts: Attempts) -> requests.Response:
        """GET the URL, with Label Studio's token where its route says the token goes."""
        auth = self._auth if located.route.carries_token else None
        logger.debug("GET %s", _display(located.url))
        try:
            return self._session.get(
                located.url,
                headers={"Accept": "image/*, */*;q=0.5"},
                auth=auth,  # None: the session's, which adds nothing
                stream=True,
                allow_redirects=False,
                timeout=self.policy.timeout_s,
            )
        except TokenExchangeError as exc:
            error = _exchange_error(exc, source)
            if isinstance(error, TransientFetchError):
                raise _Cut(exc, source, located.url, error.reason) from None
            raise error from None
        except requests.RequestException as exc:
            raise self._failed(exc, source, attempts) from None

    def _failed(
        self, exc: requests.RequestException, source: str, attempts: Attempts
    ) -> ImageLoadError:
        """The error of a request that got no reply, once urllib3's retries are spent."""
        if timed_out(exc):
            reason = f"timed out after {self.policy.timeout_s:g} s"
            return TransientFetchError(source, reason + _gave_up(attempts))
        if isinstance(exc, requests.ConnectionError):
            reason = f"connection failed ({root_cause(exc)})"
            return TransientFetchError(source, reason + _gave_up(attempts))
        return ImageLoadError(source, f"request failed ({type(exc).__name__})")

    def _check_status(
        self, status: int, located: _Located, source: str, attempts: Attempts
    ) -> None:
        if 200 <= status < 300:
            return
        url = located.url
        where = "" if _display(url) == source else f"at {_display(url)}"
        reason = f"{where + ': ' if where else ''}HTTP {status} {_phrase(status)}"
        if status in TRANSIENT_STATUSES:
            raise TransientFetchError(source, reason + _gave_up(attempts))
        if status in (401, 403) and self._auth is not None and located.route.carries_token:
            reason += f"; {self._auth.hint()}"
        elif status == 404 and LOCAL_FILES_PATH.rstrip("/") in located.parsed.path:
            reason += "; is a Local Files storage connected for this path?"
        raise ImageLoadError(source, reason)

    def _read_body(
        self,
        response: requests.Response,
        located: _Located,
        source: str,
        limits: ImageLimits,
        attempts: Attempts,
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
                if attempts.remaining_s() < 0:
                    raise TimeoutError("the download's deadline has passed")
        except (ReadTimeoutError, TimeoutError) as exc:
            reason = f"timed out after {self.policy.timeout_s:g} s reading the body"
            raise _Cut(exc, source, located.url, reason) from None
        except DecodeError:
            raise ImageLoadError(source, "could not decode the Content-Encoding") from None
        except (Urllib3Error, requests.RequestException, OSError) as exc:
            reason = f"connection broken while reading ({root_cause(exc)})"
            raise _Cut(exc, source, located.url, reason) from None
        return bytes(body)


def _gave_up(attempts: Attempts) -> str:
    """What a transient error's reason adds once more than one attempt was made."""
    return f" (gave up after {attempts.count} attempts)" if attempts.count > 1 else ""


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


def _display(url: str) -> str:
    """``url`` fit for messages and logs: no user info, no fragment, and no query string except
    the ``d`` parameter of local-files URLs (other queries may hold signed credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<not a valid URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = ""
    if parts.path.rstrip("/").endswith(LOCAL_FILES_PATH.rstrip("/")):
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k == "d"], safe="/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _read_for(path: Path, source: str, limits: ImageLimits) -> bytes:
    """A file read in place of downloading ``source``; errors name the URL, not the path."""
    try:
        return read_file(path, limits)
    except ImageLoadError as exc:
        raise ImageLoadError(source, exc.reason) from None
