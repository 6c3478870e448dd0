"""Label Studio credentials as a requests auth flow: one token, one configured Label Studio.

Label Studio 1.23 accepts two kinds of token:

- a legacy API token, sent as ``Authorization: Token <t>``;
- a personal access token (a JWT), POSTed to ``/api/token/refresh/`` in exchange for an access
  token that lives 5 minutes and is sent as ``Authorization: Bearer <access>``.

:class:`LabelStudioAuth` is a :class:`requests.auth.AuthBase`: pass it as ``auth=`` and it adds
the header to the requests that may carry it, exchanges a personal access token when needed,
reuses the access token for :data:`ACCESS_TOKEN_TTL_S` and, when Label Studio answers 401 to it,
exchanges once more and sends the request again. Which requests may carry the token (a
configured origin; with ``images_only``, its image paths only) is the configuration's answer
(:meth:`zerolabel.sites.LabelStudioSites.token_may_go_to`), never a request's. No message or log
here holds a token.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from requests.auth import AuthBase

from zerolabel.errors import TokenExchangeError
from zerolabel.sites import LS_TOKEN_SETTING, LabelStudioSites, Origin
from zerolabel.transport import TRANSIENT_STATUSES, no_auth, plain_session

logger = logging.getLogger(__name__)

ACCESS_TOKEN_TTL_S = 240.0
"""How long an exchanged access token is reused; Label Studio's live 5 minutes."""
TOKEN_REFRESH_PATH = "/api/token/refresh/"
"""Where a personal access token is exchanged for an access token."""

REFUSED_STATUSES: frozenset[int] = frozenset({400, 401, 403})
"""Statuses of a token exchange that mean the personal access token itself is refused."""

_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_DETAIL_CHARS = 500


def is_personal_access_token(token: str) -> bool:
    """Whether ``token`` is a personal access token (a JWT) rather than a legacy token."""
    return bool(_JWT.fullmatch(token))


@dataclass
class _Access:
    token: str
    expires: float  # on the clock of the LabelStudioAuth


class LabelStudioAuth(AuthBase):
    """The Authorization header of one Label Studio token, for that Label Studio only.

    Not thread-safe (it caches the access token): use one per thread.

    Args:
        sites: the configured Label Studio, or its URL (e.g. ``http://127.0.0.1:8080``, a path
            prefix kept); a personal access token is exchanged at the primary site.
        token: a legacy API token, a personal access token, or None (no header at all).
        images_only: the header goes only to Label Studio's image paths (image downloads);
            else to every path of a configured origin (the REST API).
        session: sends the token exchange (so it shares the caller's connections, retries and
            deadlines); None: a session opened for each exchange.
        timeout_s: time allowed for the token exchange.
        clock: monotonic clock for the access token's expiry (tests pass a fake).
        ttl_s: how long an exchanged access token is reused.

    Raises:
        ConfigError: a URL credentials may not go to (see :func:`zerolabel.sites.bound_origin`).
        ValueError: no Label Studio is configured.
    """

    def __init__(
        self,
        sites: LabelStudioSites | str,
        token: str | None,
        *,
        images_only: bool = False,
        session: requests.Session | None = None,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = ACCESS_TOKEN_TTL_S,
    ) -> None:
        self.sites = LabelStudioSites.configure(sites) if isinstance(sites, str) else sites
        primary = self.sites.primary
        if primary is None:
            raise ValueError("LabelStudioAuth needs a configured Label Studio URL")
        self.origin: Origin = primary.origin
        self.base_url = primary.url
        self.images_only = images_only
        self._token = token or None
        self._pat = self._token is not None and is_personal_access_token(self._token)
        self._access: _Access | None = None
        self._session = session
        self._timeout_s = timeout_s
        self._clock = clock
        self._ttl_s = ttl_s

    def __repr__(self) -> str:
        return f"LabelStudioAuth('{self.origin}', <{self.kind}>)"

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
        """Whether requests to ``url`` get the Authorization header (a token aside)."""
        return self.sites.token_may_go_to(url, images_only=self.images_only)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Add the header to ``request`` when it may carry it.

        Raises:
            TokenExchangeError: Label Studio gave no access token.
        """
        if self._token is None or not self.covers(str(request.url)):
            return request
        if not self._pat:
            request.headers["Authorization"] = f"Token {self._token}"
            return request
        request.headers["Authorization"] = f"Bearer {self._access_token()}"
        request.register_hook("response", self._on_refused)
        return request

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

    def _on_refused(self, response: requests.Response, **send: Any) -> requests.Response:
        """A 401 to an access token: exchange once more and send the request again.

        The reply to the second try is returned whatever its status, so a refused access token
        never loops.
        """
        if response.status_code != 401:
            return response
        response.close()
        logger.debug("access token refused by %s; exchanging the personal access token again", self)
        self._access = None
        again = response.request.copy()
        again.headers["Authorization"] = f"Bearer {self._access_token()}"
        retried: requests.Response = response.connection.send(again, **send)
        retried.history.append(response)
        retried.request = again
        return retried

    def _access_token(self) -> str:
        now = self._clock()
        if self._access is None or now >= self._access.expires:
            self._access = _Access(self._exchange(), now + self._ttl_s)
        return self._access.token

    def _exchange(self) -> str:
        assert self._token is not None
        logger.debug("exchanging the personal access token at %s", TOKEN_REFRESH_PATH)
        if self._session is not None:
            return self._read_access(self._post(self._session))
        with plain_session() as session:
            return self._read_access(self._post(session))

    def _post(self, session: requests.Session) -> requests.Response:
        return session.post(
            self.refresh_url,
            json={"refresh": self._token},
            auth=no_auth,
            timeout=self._timeout_s,
            allow_redirects=False,
        )

    def _read_access(self, reply: requests.Response) -> str:
        with reply:
            status = reply.status_code
            if not 200 <= status < 300:
                raise _exchange_error(status, self.scrub(_reply_detail(reply)))
            try:
                access = reply.json()["access"]
            except (ValueError, KeyError, TypeError):
                access = None
        if not isinstance(access, str) or not access:
            raise _exchange_error(status, "the reply holds no access token")
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


def _exchange_error(status: int, detail: str) -> TokenExchangeError:
    return TokenExchangeError(
        status,
        detail,
        endpoint=TOKEN_REFRESH_PATH,
        refused=status in REFUSED_STATUSES,
        transient=status in TRANSIENT_STATUSES,
    )
