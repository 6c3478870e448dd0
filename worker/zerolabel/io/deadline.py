"""One deadline per download attempt: connecting, sending, the headers and the body together.

A socket timeout bounds one read; a server that trickles its headers or body a byte at a time
never trips it. Here each attempt of a download gets a deadline, and every socket of a
:class:`DeadlineAdapter` waits, on each connect, read and write, at most for what is left of
it, so such a server fails at the deadline. Outside :meth:`Attempts.bounded` (an idle pooled
connection) the sockets keep the timeouts they are given.

:class:`Attempts` holds one download's deadlines and its budget, the time all its attempts
may take together; :class:`BudgetRetries` is urllib3's retry state of that download: it starts
each new attempt with a fresh deadline, and takes no pause past the budget.
"""

from __future__ import annotations

import contextlib
import io
import socket
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Self

from requests.adapters import DEFAULT_POOLBLOCK, HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError
from urllib3.response import BaseHTTPResponse

from zerolabel.transport import Retries

_REMAINING: ContextVar[Callable[[], float] | None] = ContextVar("_REMAINING", default=None)
"""Seconds left to the attempt under way, for the sockets it connects, reads and writes."""


class Attempts:
    """The attempts of one download: each has its own deadline, all share one budget.

    Args:
        timeout_s: time allowed for one attempt.
        budget_s: time allowed for all attempts together, pauses included; None: no bound
            beyond the attempts.
        clock: monotonic clock (tests pass a fake).
    """

    def __init__(
        self,
        timeout_s: float,
        budget_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.count = 0
        self._clock = clock
        self._end = None if budget_s is None else clock() + budget_s
        self._deadline = 0.0
        self.start()

    def start(self) -> None:
        """Begin the next attempt: its deadline is the timeout from now, within the budget."""
        self.count += 1
        deadline = self._clock() + self.timeout_s
        self._deadline = deadline if self._end is None else min(deadline, self._end)

    def remaining_s(self) -> float:
        """Seconds left to the current attempt (negative once its deadline has passed)."""
        return self._deadline - self._clock()

    def allow_pause(self, pause_s: float) -> bool:
        """Whether another attempt may follow a pause of ``pause_s``: it starts within budget."""
        return self._end is None or self._clock() + pause_s < self._end

    @contextlib.contextmanager
    def bounded(self) -> Iterator[None]:
        """Within this block, the sockets of :class:`DeadlineAdapter` keep to the deadline."""
        token = _REMAINING.set(self.remaining_s)
        try:
            yield
        finally:
            _REMAINING.reset(token)


class BudgetRetries(Retries):
    """:class:`~zerolabel.transport.Retries` of one download (see :class:`Attempts`).

    Build one with :meth:`of`; mount it as the ``max_retries`` of the download's adapter.
    """

    attempts: Attempts | None = None
    """The download's attempts: a retry starts the next one, and needs its budget."""

    @classmethod
    def of(
        cls,
        attempts: Attempts,
        retries: int,
        backoff_s: float,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Self:
        """GET retries of transient failures (:meth:`Retries.transient`) within ``attempts``."""
        made = cls.transient(retries, backoff_s, {"GET"}, sleep=sleep)
        made.attempts = attempts
        return made

    def new(self, **kw: object) -> Self:
        """The next state, keeping the download's attempts."""
        retry = super().new(**kw)
        retry.attempts = self.attempts
        return retry

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        """The state after one more failed attempt; none when its pause would end past budget.

        Raises:
            MaxRetryError: no attempt is left.
        """
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if self.attempts is not None and not self.attempts.allow_pause(retry.get_backoff_time()):
            reason = error or _OutOfBudget(f"HTTP {response.status}" if response else "")
            raise MaxRetryError(_pool, url or "", reason) from error  # type: ignore[arg-type]
        return retry

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Pause, then start the next attempt with a fresh deadline."""
        super().sleep(response)
        if self.attempts is not None:
            self.attempts.start()


class _OutOfBudget(Exception):
    """The budget left no room for another attempt after a transient status."""


class DeadlineAdapter(HTTPAdapter):
    """Connections whose sockets keep to the deadline of the attempt under way."""

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = DEFAULT_POOLBLOCK, **kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _DeadlineHTTPPool,
            "https": _DeadlineHTTPSPool,
        }


def _left() -> float | None:
    """Seconds left to the attempt under way; None outside one."""
    remaining = _REMAINING.get()
    return None if remaining is None else remaining()


class _DeadlineSocket:
    """A connected socket whose reads and writes wait no longer than the attempt has left.

    Binary files made from it (http.client reads responses through one) read through it too.
    The socket it wraps is closed once it and every such file are closed, as
    :meth:`socket.socket.makefile` promises.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._timeout = sock.gettimeout()
        self._files = 0
        self._closed = False

    def settimeout(self, value: float | None) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

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
        """Binary reads go through this object; other modes are the socket's own."""
        if mode != "rb":
            return self._sock.makefile(mode, buffering, **kwargs)  # type: ignore[call-overload]
        self._files += 1
        return io.BufferedReader(_SocketReader(self), buffering or io.DEFAULT_BUFFER_SIZE)

    def close(self) -> None:
        self._closed = True
        if self._files == 0:
            self._sock.close()

    def file_closed(self) -> None:
        """A file of :meth:`makefile` was closed: close the socket if nothing else holds it."""
        self._files -= 1
        if self._closed and self._files == 0:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def _arm(self) -> None:
        left = _left()
        if left is None:
            self._sock.settimeout(self._timeout)
            return
        if left <= 0:
            raise TimeoutError("the download's deadline has passed")
        self._sock.settimeout(left if self._timeout is None else min(left, self._timeout))


class _SocketReader(io.RawIOBase):
    """The raw binary file of a :class:`_DeadlineSocket`."""

    def __init__(self, sock: _DeadlineSocket) -> None:
        super().__init__()
        self._socket = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._socket.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            self._socket.file_closed()
        super().close()


def _cap_connect_timeout(conn: HTTPConnection) -> None:
    """Connect (and for https, the TLS handshake) within the attempt's deadline."""
    left = _left()
    if left is None:
        return
    if left <= 0:
        raise ConnectTimeoutError(conn, "the download's deadline passed before connecting")
    timeout = conn.timeout
    conn.timeout = left if not isinstance(timeout, int | float) else min(left, timeout)


class _DeadlineHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _cap_connect_timeout(self)
        super().connect()
        self.sock = _DeadlineSocket(self.sock)


class _DeadlineHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        _cap_connect_timeout(self)
        super().connect()
        self.sock = _DeadlineSocket(self.sock)


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection
