"""Progress of long work: a bar on a terminal, periodic log lines everywhere else.

Usage::

    with Progress("pre-labeling", total=len(tasks), unit="task") as progress:
        for task in tasks:
            ...
            progress.advance(1)

    for path in track(files, "computing features", unit="image"):
        ...

    with stage("loading lost (model dino_vits16 on cpu)", done="ready"):
        runner = store.runner(spec)

When the stream (stderr by default) is a terminal, :class:`Progress` draws a tqdm bar on it
(log records are then written above the bar). Otherwise (a log file, a pipe, journald, CI) it
logs a line through this module's logger every ``interval_s`` seconds, and one at the end::

    pre-labeling: 32/128 tasks (25%), 14.0 s/task, elapsed 7 min 28 s, ETA 22 min 24 s
    pre-labeling: 128/128 tasks (100%) in 29 min 52 s (14.0 s/task)

The rate is the work done in this run over the time since it started, on the bar too (tqdm's
``smoothing=0``): work that completes in bursts, such as pre-labeling's batches of 16 tasks
every few minutes, shows its true rate and ETA, never the rate inside one burst. A background
thread keeps the lines (and the bar's clock) coming while nothing completes; a test passes its
own clock, and then drives :meth:`Progress.tick` itself. :func:`stage` announces work that has
no count (a model load, a K-Means fit), so nothing long is silent.

No torch here, and tqdm only on a terminal: the queue commands use this module too.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from types import TracebackType
from typing import IO, Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

Clock = Callable[[], float]
"""Seconds from an arbitrary origin (:func:`time.monotonic`); tests pass their own."""

DEFAULT_INTERVAL_S = 10.0
"""Seconds between two progress lines, and between two reminders of a running stage."""

BEAT_S = 1.0
"""How often the background thread checks whether a line is due (and refreshes a bar)."""


class Progress:
    """Counts finished work and shows it: a tqdm bar on a terminal, else periodic log lines.

    Args:
        desc: what is being done, first word of every line ("pre-labeling").
        total: how much work there is; None when unknown (no percentage, no ETA).
        unit: the singular noun of one piece of work ("task", "image").
        initial: work already done before this run (a resumed training): counted in the
            totals, not in the rate.
        enabled: False shows nothing (the counts are still kept); nor does a total of 0.
        interval_s: seconds between two log lines; None: :data:`DEFAULT_INTERVAL_S`.
        stream: where a bar is drawn, and whose ``isatty()`` chooses a bar or log lines;
            None: ``sys.stderr`` at the time of the call.
        clock: monotonic seconds; None: :func:`time.monotonic` and a background thread that
            keeps lines coming while nothing finishes. Given (tests): no thread; call
            :meth:`tick` to emit what the thread would.

    Raises:
        ValueError: a negative ``total``, ``initial`` or ``interval_s``.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        *,
        unit: str = "item",
        initial: int = 0,
        enabled: bool = True,
        interval_s: float | None = None,
        stream: IO[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        interval = DEFAULT_INTERVAL_S if interval_s is None else interval_s
        if (total is not None and total < 0) or initial < 0 or interval < 0:
            raise ValueError(
                f"total, initial and interval_s must be >= 0, got {total}, {initial}, {interval}"
            )
        self.desc, self.total, self.unit = desc, total, unit
        self.initial = self.done = initial
        self.note = ""
        self.interval_s = interval
        self._clock = clock or time.monotonic
        self._start = self._last_line = self._clock()
        self._lock = threading.Lock()
        self._closed = False
        self._exits = contextlib.ExitStack()
        shown = enabled and total != 0
        out = sys.stderr if stream is None else stream
        self._bar = self._open_bar(out) if shown and _is_terminal(out) else None
        self._logs = shown and self._bar is None
        self._beat = _Beat(self._on_beat) if shown and clock is None else None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(stopped=exc_type is not None)

    def advance(self, n: int = 1, *, note: str | None = None) -> None:
        """Count ``n`` more finished pieces of work; ``note`` (e.g. ``loss 0.53``) is shown
        after the rate until the next note."""
        if n < 0:
            raise ValueError(f"cannot advance by {n}: progress only grows")
        with self._lock:
            self.done += n
            if note is not None:
                self.note = note
        if self._bar is not None:
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
        self.tick()

    def tick(self) -> None:
        """Log the status line when ``interval_s`` has passed since the last one."""
        if not self._logs:
            return
        with self._lock:
            now = self._clock()
            if self._closed or now - self._last_line < self.interval_s:
                return
            self._last_line = now
            text = self.status(now)
        logger.info("%s", text)

    def close(self, *, stopped: bool = False) -> None:
        """Stop the thread, close the bar and log the end line (``stopped``: the work ended
        early, by an error or an interrupt). Only the first call counts."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            text = self.summary(self._clock(), stopped=stopped)
        if self._beat is not None:
            self._beat.stop()
        self._exits.close()
        if self._logs:
            logger.info("%s", text)

    def rate_per_s(self, now: float) -> float | None:
        """Work done in this run per second since it started; None before any."""
        elapsed, done = now - self._start, self.done - self.initial
        return done / elapsed if elapsed > 0 and done > 0 else None

    def eta_s(self, now: float) -> float | None:
        """Seconds left at the run's rate; None without a total or a rate."""
        rate = self.rate_per_s(now)
        if self.total is None or rate is None:
            return None
        return max(0, self.total - self.done) / rate

    def status(self, now: float) -> str:
        """The periodic line: count, rate, elapsed time, ETA and note."""
        rate = self.rate_per_s(now)
        parts = [self._count()]
        parts.append(f"no {self.unit} done yet" if rate is None else format_rate(rate, self.unit))
        parts.append(f"elapsed {format_duration(now - self._start)}")
        eta = self.eta_s(now)
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        if self.note:
            parts.append(self.note)
        return f"{self.desc}: {', '.join(parts)}"

    def summary(self, now: float, *, stopped: bool = False) -> str:
        """The end line: count, time taken and rate."""
        rate = self.rate_per_s(now)
        elapsed = format_duration(now - self._start)
        how = f"stopped at {self._count()} after" if stopped else f"{self._count()} in"
        shown = "" if rate is None else f" ({format_rate(rate, self.unit)})"
        note = f", {self.note}" if self.note else ""
        return f"{self.desc}: {how} {elapsed}{shown}{note}"

    def _count(self) -> str:
        if self.total is None:
            return f"{self.done} {plural(self.unit, self.done)}"
        percent = 100 * self.done // self.total if self.total else 100
        return f"{self.done}/{self.total} {plural(self.unit, self.total)} ({percent}%)"

    def _open_bar(self, stream: IO[str]) -> Any:
        """A tqdm bar on ``stream`` with log records written above it; None without tqdm."""
        try:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm
        except ImportError:  # a backend-only install: log lines instead
            return None
        self._exits.enter_context(logging_redirect_tqdm())
        bar = tqdm(
            total=self.total,
            initial=self.initial,
            desc=self.desc,
            unit=self.unit,
            file=stream,
            smoothing=0,  # the rate over the whole run, not over the last burst
            dynamic_ncols=True,
        )
        return self._exits.enter_context(bar)

    def _on_beat(self) -> None:
        if self._bar is not None:
            self._bar.refresh()  # elapsed time and ETA move on while nothing finishes
        else:
            self.tick()


def track(
    items: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "item",
    enabled: bool = True,
    interval_s: float | None = None,
    stream: IO[str] | None = None,
    clock: Clock | None = None,
) -> Iterator[T]:
    """Yield ``items``, counting one as done when the next one is asked for (after the loop's
    body has handled it); the total is ``len(items)`` when it has one. The other arguments
    are :class:`Progress`'s."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with Progress(
        desc,
        total,
        unit=unit,
        enabled=enabled,
        interval_s=interval_s,
        stream=stream,
        clock=clock,
    ) as progress:
        for item in items:
            yield item
            progress.advance(1)


@contextlib.contextmanager
def stage(
    message: str,
    *,
    done: str = "done",
    interval_s: float | None = None,
    clock: Clock | None = None,
) -> Iterator[None]:
    """Log ``message ...`` at once, ``message ... still running after 40 s`` every
    ``interval_s`` while it runs, and ``message ... done in 6.8 s`` (``done`` names the end)
    or ``... failed after 6.8 s`` when it raises.

    Args:
        message: what starts ("loading model dino_vits16 on cpu").
        done: the word of the end line ("loaded", "ready").
        interval_s: seconds between reminders; None: :data:`DEFAULT_INTERVAL_S`.
        clock: monotonic seconds; given (tests), no reminder thread runs.
    """
    read = clock or time.monotonic
    start = read()
    every = DEFAULT_INTERVAL_S if interval_s is None else interval_s
    reminder = _Reminder(message, start, read, every)
    logger.info("%s ...", message)
    beat = _Beat(reminder) if clock is None else None
    try:
        yield
    except BaseException as exc:
        _stop(beat)  # no reminder may follow the end line
        how = "failed" if isinstance(exc, Exception) else "interrupted"
        logger.info("%s ... %s after %s", message, how, format_duration(read() - start))
        raise
    _stop(beat)
    logger.info("%s ... %s in %s", message, done, format_duration(read() - start))


def _stop(beat: _Beat | None) -> None:
    if beat is not None:
        beat.stop()


class _Reminder:
    """Logs that a stage is still running, at most once per interval."""

    def __init__(self, message: str, start: float, clock: Clock, interval_s: float) -> None:
        self.message, self.start, self.clock, self.interval_s = message, start, clock, interval_s
        self.last = start

    def __call__(self) -> None:
        now = self.clock()
        if now - self.last >= self.interval_s:
            self.last = now
            running = format_duration(now - self.start)
            logger.info("%s ... still running after %s", self.message, running)


class _Beat:
    """A daemon thread calling ``beat`` every :data:`BEAT_S` seconds until :meth:`stop`."""

    def __init__(self, beat: Callable[[], None]) -> None:
        self._stopped = threading.Event()
        self._beat = beat
        self._thread = threading.Thread(target=self._run, name="zerolabel-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(BEAT_S):
            try:
                self._beat()
            except (OSError, ValueError) as exc:  # a closed stream must not stop the work
                logger.debug("progress not shown: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def plural(unit: str, count: int) -> str:
    """``unit`` with an ``s`` unless ``count`` is 1 (or it ends in ``s`` already)."""
    return unit if count == 1 or unit.endswith("s") else f"{unit}s"


def format_rate(per_s: float, unit: str) -> str:
    """``3.2 images/s`` from one per second on, ``14.0 s/task`` below."""
    if per_s >= 1:
        return f"{per_s:.1f} {plural(unit, 2)}/s"
    return f"{1 / per_s:.1f} s/{unit}"


def format_duration(seconds: float) -> str:
    """``6.8 s``, ``42 s``, ``7 min 05 s``, ``2 h 03 min``."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
