"""Label Studio credentials over HTTP: one origin, one token, one Authorization header.

Label Studio 1.23 accepts two kinds of token:

- a legacy API token, sent as ``Authorization: Token <t>``;
- a personal access token (a JWT), POSTed to ``/api/token/refresh/`` in exchange for an access
  token that lives 5 minutes and is sent as ``Authorization: Bearer <access>``.

A :class:`LabelStudioAuth` is bound to the origin (scheme, host, port) of the configured Label
Studio URL (plus, for image downloads, the origins of its configured aliases) and to one token.
It hands out the header only for URLs of those origins, as decided by
:func:`may_receive_credentials`; it exchanges a personal access token when needed, reuses the
access token for :data:`ACCESS_TOKEN_TTL_S` and exchanges once more when Label Studio answers 401.
The HTTP requests themselves stay with the caller, which passes in how to send them, so that each
caller keeps its own session, time limits and error types.

:class:`LabelStudioSites` is the configured Label Studio as a whole: ``LABEL_STUDIO_URL`` and the
other names given in ``ZEROLABEL_LABEL_STUDIO_ALIASES``. Credentials are configured per process
and go only there; a URL named by a request (a task, Label Studio's ``/setup``) is only ever
matched against these sites, never trusted on its own.

:data:`TRANSIENT_STATUSES` and :class:`RetryPolicy` are the one definition of which failures are
worth another attempt and how long to wait before it. No message or log here holds a token.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar
from urllib.parse import urlsplit

import requests

from zerolabel.errors import ConfigError, DiscoveryError

logger = logging.getLogger(__name__)

LS_URL_SETTING = "LABEL_STUDIO_URL"
"""Environment variable named in errors about the Label Studio URL."""
LS_TOKEN_SETTING = "LABEL_STUDIO_API_KEY"
"""Environment variable named in errors about Label Studio credentials."""
LS_ALIASES_SETTING = "ZEROLABEL_LABEL_STUDIO_ALIASES"
"""Environment variable listing other URLs of the same Label Studio (same token)."""

IMAGE_PATH_PREFIXES: tuple[str, ...] = ("/data/upload/", "/data/local-files/")
"""Paths (below the configured URL's own path) where Label Studio serves task images: the only
requests of an image download that carry the token."""

ACCESS_TOKEN_TTL_S = 240.0
"""How long an exchanged access token is reused; Label Studio's live 5 minutes."""
TOKEN_REFRESH_PATH = "/api/token/refresh/"
"""Where a personal access token is exchanged for an access token."""

TRANSIENT_STATUSES: frozenset[int] = frozenset({408, 425, 429, *range(500, 600)})
"""HTTP statuses that may not come again on a later attempt: timeouts, rate limits, 5xx."""
REFUSED_STATUSES: frozenset[int] = frozenset({400, 401, 403})
"""Statuses of a token exchange that mean the personal access token itself is refused."""

_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DETAIL_CHARS = 500

T = TypeVar("T")

Request = Callable[[dict[str, str]], requests.Response]
"""Sends the caller's request with these extra headers and returns the reply."""
PostJSON = Callable[[str, dict[str, str]], requests.Response]
"""POSTs a JSON body to a URL and returns the reply (used for the token exchange)."""


class Origin(NamedTuple):
    """Scheme, host and port of an http(s) URL, lower-case, with the default port filled in."""

    scheme: str
    host: str
    port: int


class TokenExchangeError(DiscoveryError):
    """Label Studio gave no access token for the personal access token.

    Attributes:
        status: HTTP status of Label Studio's reply.
        detail: Label Studio's message, or what was wrong with the reply; never a token.
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(
            f"Label Studio token exchange at {TOKEN_REFRESH_PATH}: HTTP {status}: {detail}"
        )
        self.status = status
        self.detail = detail

    @property
    def refused(self) -> bool:
        """Whether Label Studio refused the personal access token (a new one is needed)."""
        return self.status in REFUSED_STATUSES

    @property
    def transient(self) -> bool:
        """Whether the exchange may succeed when tried again later."""
        return self.status in TRANSIENT_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try again after a transient failure, and how long to pause before.

    Attributes:
        retries: further attempts after the first.
        backoff_s: the pause after the first failed attempt; it doubles after each one.
    """

    retries: int = 2
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0:
            raise ConfigError("RetryPolicy needs retries >= 0 and backoff_s >= 0")

    @property
    def attempts(self) -> int:
        """Attempts in all."""
        return self.retries + 1

    def pause_s(self, failed: int) -> float:
        """The pause after the attempt numbered ``failed`` (from 0) failed."""
        return self.backoff_s * 2.0**failed

    def run(
        self,
        attempt: Callable[[], T],
        *,
        transient: Callable[[DiscoveryError], bool],
        sleep: Callable[[float], None] = time.sleep,
    ) -> T:
        """``attempt()``, tried again after each error ``transient`` accepts, while attempts last.

        Raises:
            DiscoveryError: the first error that is not transient, or the last transient one.
        """
        for failed in range(self.attempts):
            try:
                return attempt()
            except DiscoveryError as exc:
                if not transient(exc) or failed + 1 == self.attempts:
                    raise
                pause = self.pause_s(failed)
                logger.warning(
                    "%s; attempt %d of %d, retrying in %.2g s",
                    exc,
                    failed + 1,
                    self.attempts,
                    pause,
                )
                sleep(pause)
        raise AssertionError("unreachable")


def is_personal_access_token(token: str) -> bool:
    """Whether ``token`` is a personal access token (a JWT) rather than a legacy token."""
    return bool(_JWT.fullmatch(token))


def parse_origin(url: str) -> Origin | None:
    """The origin of an http(s) URL with a host and a valid port, else None."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            return None
        port = parts.port
        if port == 0:
            return None
        return Origin(scheme, parts.hostname, _DEFAULT_PORTS[scheme] if port is None else port)
    except ValueError:  # a bad port, or brackets of an IPv6 address left open
        return None


def may_receive_credentials(url: str, origin: Origin) -> bool:
    """Whether a request to ``url`` may carry the credentials bound to ``origin``.

    Only when the parsed origin of ``url`` equals ``origin``. URLs with user info, backslashes or
    non-printable characters are refused whatever their origin: HTTP libraries and servers do not
    agree on where such URLs lead.
    """
    if "\\" in url or not url.isprintable() or parse_origin(url) != origin:
        return False
    return "@" not in urlsplit(url).netloc


def bound_origin(url: str, setting: str = LS_URL_SETTING) -> Origin:
    """The origin of a configured Label Studio URL, refused if credentials could not go there.

    Args:
        url: the configured URL.
        setting: the environment variable it came from, named in the error.

    Raises:
        ConfigError: not an http(s) URL with a host and a valid port, or one with user info,
            a query, a fragment or a backslash.
    """
    origin = parse_origin(url)
    if origin is None or not may_receive_credentials(url, origin) or _has_query(url):
        raise ConfigError(
            f"Label Studio URL {_without_user_info(url)!r} is not an http(s) URL with a host, "
            f"no user info and no query (set {setting}, e.g. http://127.0.0.1:8080)"
        )
    return origin


@dataclass(frozen=True)
class LabelStudioSite:
    """One configured URL of the Label Studio: its origin and the path it is served under.

    Attributes:
        url: the URL as configured, without a trailing slash (relative task URLs join it).
        origin: its scheme, host and port.
        base_path: the path Label Studio is served under: ``""``, or e.g. ``"/ls"``.
    """

    url: str
    origin: Origin
    base_path: str

    @classmethod
    def parse(cls, url: str, setting: str = LS_URL_SETTING) -> LabelStudioSite:
        """The site of a configured URL.

        Raises:
            ConfigError: credentials could not go there (see :func:`bound_origin`).
        """
        origin = bound_origin(url, setting)
        base = url.strip().rstrip("/")
        return cls(base, origin, urlsplit(base).path.rstrip("/"))

    def serves_images_at(self, path: str) -> bool:
        """Whether ``path`` (of a URL of this origin) is where Label Studio serves task images."""
        return any(path.startswith(self.base_path + prefix) for prefix in IMAGE_PATH_PREFIXES)


@dataclass(frozen=True)
class LabelStudioSites:
    """The configured Label Studio: ``LABEL_STUDIO_URL`` first, then its aliases.

    Every site names the same Label Studio and shares one token. Nothing here ever comes from
    a request: URLs that requests name are matched against these sites with :meth:`find` and
    :meth:`check_hostname`, so credentials and the image allow-list follow the configuration only.

    Attributes:
        sites: the primary site first; empty when ``LABEL_STUDIO_URL`` is not set.
    """

    sites: tuple[LabelStudioSite, ...] = ()

    @classmethod
    def configure(cls, url: str | None, aliases: Iterable[str] = ()) -> LabelStudioSites:
        """The sites of ``LABEL_STUDIO_URL`` and ``ZEROLABEL_LABEL_STUDIO_ALIASES``.

        Raises:
            ConfigError: a URL credentials may not go to, or aliases without a Label Studio URL.
        """
        aliases = tuple(aliases)
        if not url:
            if aliases:
                raise ConfigError(
                    f"{LS_ALIASES_SETTING} lists other names of the Label Studio at "
                    f"{LS_URL_SETTING}, which is not set: set {LS_URL_SETTING} too"
                )
            return cls()
        primary = LabelStudioSite.parse(url)
        sites = [primary]
        for alias in aliases:
            site = LabelStudioSite.parse(alias, LS_ALIASES_SETTING)
            if all(site.origin != known.origin for known in sites):
                sites.append(site)
        return cls(tuple(sites))

    @property
    def primary(self) -> LabelStudioSite | None:
        """The site of ``LABEL_STUDIO_URL``; None when it is not set."""
        return self.sites[0] if self.sites else None

    @property
    def origins(self) -> tuple[Origin, ...]:
        """Every configured origin, the primary first."""
        return tuple(site.origin for site in self.sites)

    def find(self, url: str) -> LabelStudioSite | None:
        """The configured site whose origin ``url`` has (default ports filled in), else None.

        A URL with user info, a backslash or a non-printable character matches no site.
        """
        origin = parse_origin(url.strip())
        if origin is None:
            return None
        for site in self.sites:
            if site.origin == origin and may_receive_credentials(url.strip(), origin):
                return site
        return None

    def check_hostname(self, hostname: str | None) -> LabelStudioSite | None:
        """The site a ``/setup`` hostname names: None for an empty one or when none is set.

        Without ``LABEL_STUDIO_URL`` a hostname is not kept (nothing may go there); relative
        task URLs then fail per task, asking for ``LABEL_STUDIO_URL``.

        Raises:
            ConfigError: the hostname is not one of the configured sites.
        """
        if not hostname or not hostname.strip() or not self.sites:
            return None
        site = self.find(hostname)
        if site is None:
            raise ConfigError(
                f"hostname {_without_user_info(hostname.strip())} is not the configured Label "
                f"Studio ({self.describe()}); add it to {LS_ALIASES_SETTING} if it is another "
                "name for it"
            )
        return site

    def may_send_token(self, origin: Origin, path: str) -> bool:
        """Whether a request to ``path`` on ``origin`` may carry the Label Studio token.

        Only image paths (:data:`IMAGE_PATH_PREFIXES` below a site's path) of a configured
        origin: never the API, never another host.
        """
        return any(site.origin == origin and site.serves_images_at(path) for site in self.sites)

    def describe(self) -> str:
        """The configured URLs, for messages (configured URLs hold no credentials)."""
        if not self.sites:
            return f"{LS_URL_SETTING} is not set"
        text = f"{LS_URL_SETTING}={self.sites[0].url}"
        if len(self.sites) > 1:
            text += f", {LS_ALIASES_SETTING}={','.join(site.url for site in self.sites[1:])}"
        return text


def plain_session() -> requests.Session:
    """A session that adds no credentials of its own (none from ``~/.netrc`` or user info)."""
    session = requests.Session()
    session.auth = _no_auth
    return session


@dataclass
class _Access:
    token: str
    expires: float  # on the clock of the LabelStudioAuth


class LabelStudioAuth:
    """The Authorization header for one Label Studio origin and one token.

    Not thread-safe (it caches the access token): use one per thread.

    Args:
        url: Label Studio base URL, e.g. ``http://127.0.0.1:8080`` (a path prefix is kept);
            a personal access token is exchanged there.
        token: a legacy API token, a personal access token, or None (no header at all).
        clock: monotonic clock for the access token's expiry (tests pass a fake).
        ttl_s: how long an exchanged access token is reused.
        aliases: other configured URLs of the same Label Studio whose origins get the header
            too (see :class:`LabelStudioSites`).

    Raises:
        ConfigError: ``url`` or an alias is not one credentials may go to (see
            :func:`bound_origin`).
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = ACCESS_TOKEN_TTL_S,
        aliases: Sequence[str] = (),
    ) -> None:
        self.origin = bound_origin(url)
        self.origins: tuple[Origin, ...] = (
            self.origin,
            *(bound_origin(alias, LS_ALIASES_SETTING) for alias in aliases),
        )
        self.base_url = url.rstrip("/")
        self._token = token or None
        self._pat = self._token is not None and is_personal_access_token(self._token)
        self._access: _Access | None = None
        self._clock = clock
        self._ttl_s = ttl_s

    def __repr__(self) -> str:
        scheme, host, port = self.origin
        return f"LabelStudioAuth('{scheme}://{host}:{port}', <{self.kind}>)"

    @property
    def kind(self) -> str:
        """``personal access token``, ``legacy token`` or ``no token``."""
        if self._token is None:
            return "no token"
        return "personal access token" if self._pat else "legacy token"

    @property
    def refresh_url(self) -> str:
        """The URL a personal access token is exchanged at."""
        return self.base_url + TOKEN_REFRESH_PATH

    def covers(self, url: str) -> bool:
        """Whether requests to ``url`` get the Authorization header (one of its origins)."""
        return any(may_receive_credentials(url, origin) for origin in self.origins)

    def headers(self, url: str, post: PostJSON) -> dict[str, str]:
        """The Authorization header for ``url``: empty for another origin or without a token.

        Args:
            url: the URL the request goes to.
            post: sends the token exchange when a personal access token needs one.

        Raises:
            TokenExchangeError: Label Studio gave no access token.
        """
        if self._token is None or not self.covers(url):
            return {}
        if not self._pat:
            return {"Authorization": f"Token {self._token}"}
        return {"Authorization": f"Bearer {self._access_token(post)}"}

    def send(self, url: str, request: Request, post: PostJSON) -> requests.Response:
        """``request`` with the header for ``url``; once more with a fresh access token on a 401.

        The 401 reply to the first try is closed; the reply to the second is returned whatever
        its status, so a refused access token never loops.

        Raises:
            TokenExchangeError: Label Studio gave no access token.
        """
        response = request(self.headers(url, post))
        if response.status_code != 401 or not self._pat or not self.covers(url):
            return response
        response.close()
        logger.debug("access token refused by %s; exchanging the personal access token again", self)
        self._access = None
        return request(self.headers(url, post))

    def hint(self) -> str:
        """What to check when Label Studio answers 401 or 403 to a request with this header."""
        if self._pat:
            return "the access token exchanged from the personal access token was refused"
        if self._token is not None:
            return (
                "the legacy token was refused (legacy tokens may be disabled for the "
                "organisation: use a personal access token or enable legacy tokens)"
            )
        return f"no Label Studio token is configured (set {LS_TOKEN_SETTING})"

    def scrub(self, text: str) -> str:
        """``text`` with the token and the current access token replaced by ``<token>``."""
        for secret in (self._token, self._access.token if self._access else None):
            if secret:
                text = text.replace(secret, "<token>")
        return text

    def _access_token(self, post: PostJSON) -> str:
        now = self._clock()
        if self._access is None or now >= self._access.expires:
            self._access = _Access(self._exchange(post), now + self._ttl_s)
        return self._access.token

    def _exchange(self, post: PostJSON) -> str:
        assert self._token is not None
        logger.debug("exchanging the personal access token at %s", TOKEN_REFRESH_PATH)
        with post(self.refresh_url, {"refresh": self._token}) as reply:
            status = reply.status_code
            if not 200 <= status < 300:
                raise TokenExchangeError(status, self.scrub(_reply_detail(reply)))
            try:
                access = reply.json()["access"]
            except (ValueError, KeyError, TypeError):
                access = None
        if not isinstance(access, str) or not access:
            raise TokenExchangeError(status, "the reply holds no access token")
        return access


def _reply_detail(reply: requests.Response) -> str:
    """Label Studio's ``detail``, else the start of the body, else the reason phrase."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"]:
        return str(body["detail"])[:_DETAIL_CHARS]
    text = " ".join(reply.text.split())[:_DETAIL_CHARS]
    return text or reply.reason or ""


def _has_query(url: str) -> bool:
    parts = urlsplit(url.strip())
    return bool(parts.query or parts.fragment or "?" in url or "#" in url)


def _without_user_info(url: str) -> str:
    """``url`` without user info, query and fragment, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<not a URL>"
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request
