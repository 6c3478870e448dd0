"""HTTP as zerolabel speaks it: sessions that add no credentials, urllib3's retries of failures
that may pass, and what a failed request's error means.

Usage::

    retries = Retries.transient(retries=2, backoff_s=0.5, methods={"GET", "PATCH"})
    session = plain_session(HTTPAdapter(max_retries=retries))

:data:`TRANSIENT_STATUSES` and :class:`Retries` are the one definition of which failures are
worth another attempt and how long to wait before it; the image fetcher and the Label Studio
client both mount them on their sessions.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from zerolabel.errors import ConfigError
from zerolabel.sites import redact_user_info

logger = logging.getLogger(__name__)

TRANSIENT_STATUSES: frozenset[int] = frozenset({408, 425, 429, *range(500, 600)})
"""HTTP statuses that may not come again on a later attempt: timeouts, rate limits, 5xx."""


class Retries(Retry):
    """urllib3's :class:`~urllib3.util.retry.Retry`, as zerolabel's sessions mount it.

    What it changes: the first pause is ``backoff_factor`` and each next one doubles (urllib3
    would retry the first failure at once); pauses go through :attr:`pause` (tests pass a fake);
    a method outside ``allowed_methods`` is never sent twice, even when its connection failed
    before it went out (urllib3 would resend it). Build one with :meth:`transient`.
    """

    pause: Callable[[float], None] = staticmethod(time.sleep)
    """How the pause before a retry is taken."""

    @classmethod
    def transient(
        cls,
        retries: int,
        backoff_s: float,
        methods: Collection[str],
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Self:
        """Retries of transient failures: connection errors, timeouts, :data:`TRANSIENT_STATUSES`.

        The reply to the last attempt is returned whatever its status; a ``Retry-After`` header
        is not obeyed (a server cannot make a worker wait longer than the doubling pauses).

        Args:
            retries: further attempts after the first.
            backoff_s: the pause after the first failed attempt; it doubles after each one.
            methods: the HTTP methods that may be sent again (never POST: a lost reply may hide
                a request that was carried out).
            sleep: takes the pauses (tests pass a fake).

        Raises:
            ConfigError: a negative number of retries or pause.
        """
        if retries < 0 or backoff_s < 0:
            raise ConfigError("Retries need retries >= 0 and backoff_s >= 0")
        made = cls(
            total=retries,
            backoff_factor=backoff_s,
            status_forcelist=TRANSIENT_STATUSES,
            allowed_methods=frozenset(m.upper() for m in methods),
            raise_on_status=False,
            respect_retry_after_header=False,
        )
        made.pause = sleep
        return made

    def new(self, **kw: object) -> Self:
        """The next state, keeping :attr:`pause` (it is not one of urllib3's parameters)."""
        retry = super().new(**kw)
        retry.pause = self.pause
        return retry

    def get_backoff_time(self) -> float:
        """``backoff_factor`` after the first failure in a row, doubled after each next one."""
        failures = 0
        for attempt in reversed(self.history):
            if attempt.redirect_location is not None:
                break
            failures += 1
        if failures == 0:
            return 0.0
        return float(min(self.backoff_max, self.backoff_factor * 2.0 ** (failures - 1)))

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Pause before the next attempt."""
        pause = self.get_backoff_time()
        if self.history:
            last = self.history[-1]
            cause = f"HTTP {last.status}" if last.status else type(last.error).__name__
            logger.warning("%s; retrying in %.2g s", cause, pause)
        if pause > 0:
            self.pause(pause)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        """The state after one more failed attempt.

        Raises:
            MaxRetryError: no attempt is left, or ``method`` may not be sent again.
        """
        if error is not None and method is not None and not self._is_method_retryable(method):
            raise MaxRetryError(_pool, url or "", error) from error  # type: ignore[arg-type]
        return super().increment(method, url, response, error, _pool, _stacktrace)


def plain_session(adapter: HTTPAdapter | None = None) -> requests.Session:
    """A session that adds no credentials of its own (none from ``~/.netrc`` or user info).

    Args:
        adapter: mounted for ``http://`` and ``https://`` (e.g. with :class:`Retries`).
    """
    session = requests.Session()
    session.auth = no_auth
    if adapter is not None:
        for prefix in ("http://", "https://"):
            session.mount(prefix, adapter)
    return session


def no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """Sends a request as it is: what keeps requests from looking up ``~/.netrc``."""
    return request


def timed_out(exc: BaseException) -> bool:
    """Whether a request failed because a time limit passed (not because it was refused)."""
    for cause in _causes(exc):
        if isinstance(cause, NewConnectionError):
            return False
        if isinstance(
            cause, requests.Timeout | Urllib3ReadTimeout | ConnectTimeoutError | TimeoutError
        ):
            return True
    return False


def root_cause(exc: BaseException) -> str:
    """The innermost OS error's text (e.g. "Connection refused"), never a URL or header."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return type(exc).__name__


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps, outermost first (requests and urllib3 nest their errors)."""
    found: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(found) < 8:
        found.append(seen)
        nested = getattr(seen, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((a for a in seen.args if isinstance(a, BaseException)), None)
        seen = nested if isinstance(nested, BaseException) else seen.__cause__ or seen.__context__
    return found


class QueryRedaction(logging.Filter):
    """Removes query strings from the URLs and paths of a log record's message.

    urllib3 logs its retries with the request's path and query; a signed storage URL carries its
    credential there. Entry points attach it to urllib3's loggers (:func:`redact_logs`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _QUERY.sub("?<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_QUERY = re.compile(r"\?[^\s'\")]+")


class UserInfoRedaction(logging.Filter):
    """Removes the user info of URLs (``redis://:PW@host``) from a log record's message and
    traceback text; entry points attach it to the root logger's handlers, which every record
    reaches."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_user_info(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_user_info(record.exc_text)
        return True


_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry")
"""The loggers urllib3 writes URLs to (a logger's filters see only its own records)."""


def redact_logs() -> None:
    """Keep credentials out of the logs (once per process; entry points call it after setting
    up logging): :class:`QueryRedaction` on urllib3's loggers, :class:`UserInfoRedaction` on the
    root logger's handlers."""
    for name in _URLLIB3_LOGGERS:
        library = logging.getLogger(name)
        if not any(isinstance(f, QueryRedaction) for f in library.filters):
            library.addFilter(QueryRedaction())
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, UserInfoRedaction) for f in handler.filters):
            handler.addFilter(UserInfoRedaction())
