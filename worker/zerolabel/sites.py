"""Where zerolabel's HTTP requests may go, and which of them carry the Label Studio token.

Standard library only: settings, the image fetcher, the Label Studio client and the queue all
take their answers from here, so each rule is written once.

- :class:`Origin`: scheme, host and port of an http(s) URL, the port's default
  (:data:`DEFAULT_PORTS`) filled in. Two URLs are on one origin when their origins are equal.
- :class:`LabelStudioSites`: the configured Label Studio, ``LABEL_STUDIO_URL`` first, then the
  other names given in ``ZEROLABEL_LABEL_STUDIO_ALIASES``. Every site shares one token.
- :func:`parse_allowed_hosts`: ``ZEROLABEL_ALLOWED_HOSTS``, further hosts images may come from
  (compared as ``host`` or ``host:port`` without the scheme; never sent the token).
- :class:`Destinations`: the one answer for each URL an image download is about to request:
  refused, or allowed and then whether it is a Label Studio image path, the only requests
  that carry the token (:data:`IMAGE_PATH_PREFIXES` below a site's path).

Nothing here ever comes from a request: a URL that a request, a task, a labeling config or a
redirect names is only matched against the configuration, never trusted on its own. URLs with
user info, backslashes or non-printable characters match no site.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from zerolabel.errors import ConfigError

LS_URL_SETTING = "LABEL_STUDIO_URL"
"""Environment variable of the Label Studio URL."""
LS_TOKEN_SETTING = "LABEL_STUDIO_API_KEY"
"""Environment variable of the Label Studio token (legacy or personal access token)."""
LS_ALIASES_SETTING = "ZEROLABEL_LABEL_STUDIO_ALIASES"
"""Environment variable listing other URLs of the same Label Studio (same token)."""
ALLOWED_HOSTS_SETTING = "ZEROLABEL_ALLOWED_HOSTS"
"""Environment variable listing further hosts images may be downloaded from."""

DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443}
"""The port of a URL that names none, by scheme."""

UPLOAD_PATH = "/data/upload/"
"""Where Label Studio serves uploaded files: ``/data/upload/<project>/<file>``."""
LOCAL_FILES_PATH = "/data/local-files/"
"""Where Label Studio serves its local-files storage: ``/data/local-files/?d=<path>``."""
IMAGE_PATH_PREFIXES: tuple[str, ...] = (UPLOAD_PATH, LOCAL_FILES_PATH)
"""Paths (below a site's own path) where Label Studio serves task images: the only requests of
an image download that carry the token."""


class Origin(NamedTuple):
    """Scheme, host and port of an http(s) URL, lower-case, with the default port filled in.

    ``str(origin)`` is ``scheme://host:port``.
    """

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_origin(url: str) -> Origin | None:
    """The origin of an http(s) URL with a host and a valid port, else None."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            return None
        port = parts.port
        if port == 0:
            return None
        return Origin(scheme, parts.hostname, DEFAULT_PORTS[scheme] if port is None else port)
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
            f"Label Studio URL {without_user_info(url)!r} is not an http(s) URL with a host, "
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

    Every site names the same Label Studio and shares one token: the only places it goes, and
    the only hostnames Label Studio's ``/setup`` may name.

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
        sites = [LabelStudioSite.parse(url)]
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

    def at(self, origin: Origin) -> LabelStudioSite | None:
        """The configured site of this origin, else None."""
        return next((site for site in self.sites if site.origin == origin), None)

    def find(self, url: str) -> LabelStudioSite | None:
        """The configured site whose origin ``url`` has (surrounding blanks ignored), else None.

        A URL with user info, a backslash or a non-printable character matches no site.
        """
        return self._site_of(url.strip())

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
                f"hostname {without_user_info(hostname.strip())} is not the configured Label "
                f"Studio ({self.describe()}); add it to {LS_ALIASES_SETTING} if it is another "
                "name for it"
            )
        return site

    def may_send_token(self, origin: Origin, path: str) -> bool:
        """Whether a request to ``path`` on ``origin`` may carry the Label Studio token.

        Only image paths (:data:`IMAGE_PATH_PREFIXES` below a site's path) of a configured
        origin: never the API, never another host.
        """
        site = self.at(origin)
        return site is not None and site.serves_images_at(path)

    def token_may_go_to(self, url: str, *, images_only: bool) -> bool:
        """Whether a request to ``url``, exactly as given, may carry the Label Studio token.

        Args:
            url: the URL the request goes to.
            images_only: only Label Studio's image paths (image downloads); else any path of a
                configured origin (the REST API).
        """
        site = self._site_of(url)
        return site is not None and (not images_only or site.serves_images_at(urlsplit(url).path))

    def describe(self) -> str:
        """The configured URLs, for messages (configured URLs hold no credentials)."""
        if not self.sites:
            return f"{LS_URL_SETTING} is not set"
        text = f"{LS_URL_SETTING}={self.sites[0].url}"
        if len(self.sites) > 1:
            text += f", {LS_ALIASES_SETTING}={','.join(site.url for site in self.sites[1:])}"
        return text

    def _site_of(self, url: str) -> LabelStudioSite | None:
        origin = parse_origin(url)
        if origin is None or not may_receive_credentials(url, origin):
            return None
        return self.at(origin)


def host_key(hostname: str, port: int | None) -> str:
    """``host`` or ``host:port``, lower-case; ports 80 and 443 count as the default."""
    host = hostname.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    return host if port is None or port in DEFAULT_PORTS.values() else f"{host}:{port}"


def host_keys(entries: Iterable[str]) -> frozenset[str]:
    """The host keys of allow-list entries (``host``, ``host:port`` or a URL without a path).

    Raises:
        ConfigError: an entry that is not a host or host:port, naming ``ZEROLABEL_ALLOWED_HOSTS``.
    """
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
        keys.add(host_key(parts.hostname, port))
    return frozenset(keys)


def parse_allowed_hosts(value: str) -> frozenset[str]:
    """Parse a comma- or space-separated host list, as given in ``ZEROLABEL_ALLOWED_HOSTS``.

    Raises:
        ConfigError: an entry that is not a host or host:port.
    """
    hosts = frozenset(part for part in re.split(r"[,\s]+", value) if part)
    host_keys(hosts)
    return hosts


@dataclass(frozen=True)
class Route:
    """Where one allowed URL of an image download leads.

    Attributes:
        site: the configured Label Studio site of its origin; None for an allow-listed host.
        image_path: its path below the site's path when it is a Label Studio image path
            (``/data/upload/...`` or ``/data/local-files/``), else None.
    """

    site: LabelStudioSite | None = None
    image_path: str | None = None

    @property
    def carries_token(self) -> bool:
        """Whether the request carries the Label Studio token: image paths of a site only."""
        return self.image_path is not None


class Destinations:
    """Where image downloads may go: the configured Label Studio and the allow-listed hosts.

    The one object an image download asks, once for each URL it requests (redirects included).

    Args:
        sites: the configured Label Studio; its hosts are allowed too.
        allowed_hosts: further hosts as ``host`` or ``host:port`` (``ZEROLABEL_ALLOWED_HOSTS``).

    Raises:
        ConfigError: an allowed host that is not a host or host:port.
    """

    def __init__(self, sites: LabelStudioSites, allowed_hosts: Iterable[str] = ()) -> None:
        self.sites = sites
        self._allowed = host_keys(allowed_hosts) | {
            host_key(origin.host, origin.port) for origin in sites.origins
        }

    def route(self, origin: Origin, path: str) -> Route | None:
        """Where a URL of ``origin`` and ``path`` (percent-encoded, as sent) leads.

        Returns:
            None when the host is not allowed; else its route (see :class:`Route`).
        """
        site = self.sites.at(origin)
        if site is None:
            allowed = host_key(origin.host, origin.port) in self._allowed
            return Route() if allowed else None
        image = path.removeprefix(site.base_path) if site.serves_images_at(path) else None
        return Route(site, image)


def without_user_info(url: str) -> str:
    """``url`` without user info, query and fragment, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<not a URL>"
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def redact_user_info(text: str) -> str:
    """``text`` with the user info of every URL in it (``redis://:PW@host``) left out."""
    return _USER_INFO.sub("", text)


_USER_INFO = re.compile(r"(?<=://)[^/\s@'\"]*@")


def _has_query(url: str) -> bool:
    parts = urlsplit(url.strip())
    return bool(parts.query or parts.fragment or "?" in url or "#" in url)
