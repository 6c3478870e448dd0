"""Progress of long work (``zerolabel.progress``): log lines off a terminal, a bar on one.

A fake clock drives every timing here; the background thread is tested apart, by waiting for
what it writes.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pytest
from zerolabel import progress as progress_module
from zerolabel.progress import Progress, format_duration, format_rate, stage, track


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """The messages this module logs, as they come."""
    caplog.set_level(logging.INFO, logger="zerolabel.progress")
    captured: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record.getMessage())

    handler = Collect()
    logging.getLogger("zerolabel.progress").addHandler(handler)
    yield captured
    logging.getLogger("zerolabel.progress").removeHandler(handler)


def _progress(clock: FakeClock, total: int | None = 100, **kwargs) -> Progress:
    return Progress(
        "work", total, unit="image", interval_s=10, stream=io.StringIO(), clock=clock, **kwargs
    )


def test_a_line_every_interval_with_the_rate_and_eta(clock, lines):
    with _progress(clock) as progress:
        for _ in range(15):  # one image every 2 s, for 30 s
            clock.now += 2
            progress.advance(1)
    periodic, end = lines[:-1], lines[-1]
    assert len(periodic) == 3  # at 10, 20 and 30 s; none between
    # at 20 s: 10 of 100 images, 2 s each, 90 left -> 180 s
    assert periodic[1] == ("work: 10/100 images (10%), 2.0 s/image, elapsed 20 s, ETA 3 min 00 s")
    assert end == "work: 15/100 images (15%) in 30 s (2.0 s/image)"


def test_no_line_before_the_interval_then_one_while_nothing_finishes(clock, lines):
    with _progress(clock) as progress:
        clock.now = 9.9
        progress.tick()
        assert lines == []
        clock.now = 12
        progress.tick()  # what the background thread does while a batch is waited for
        assert lines == ["work: 0/100 images (0%), no image done yet, elapsed 12 s"]
        progress.tick()
        assert len(lines) == 1  # the next line waits for the next interval


def test_bursts_show_the_rate_of_the_whole_run(clock, lines):
    """16 tasks stored in 0.8 s every 300 s: the rate is one task per 18.8 s, not 20 per s."""
    shown = Progress(
        "pre-labeling", 128, unit="task", interval_s=10, stream=io.StringIO(), clock=clock
    )
    with shown as progress:
        for burst in range(1, 4):
            clock.now = 300.0 * burst
            for _ in range(16):
                clock.now += 0.05
                progress.advance(1)
        rate = progress.rate_per_s(clock.now)
        assert rate == pytest.approx(48 / 900.8)
        assert progress.eta_s(clock.now) == pytest.approx(80 / rate)
    # the line of the third burst's first task: 33 tasks in 900.05 s
    assert lines[-2].startswith("pre-labeling: 33/128 tasks (25%), 27.3 s/task, elapsed 15 min")
    assert lines[-1] == "pre-labeling: 48/128 tasks (37%) in 15 min 01 s (18.8 s/task)"
    assert not any("tasks/s" in line for line in lines)  # the burst's rate is never shown


def test_a_resumed_run_counts_only_its_own_work_in_the_rate(clock, lines):
    with _progress(clock, total=10, initial=4) as progress:
        clock.now = 4
        progress.advance(2, note="loss 0.532")
        clock.now = 10
        progress.tick()
    # 2 iterations in 10 s: 5 s each, 4 left -> 20 s
    assert lines[0] == "work: 6/10 images (60%), 5.0 s/image, elapsed 10 s, ETA 20 s, loss 0.532"


def test_an_unknown_total_shows_counts_and_rate_without_eta(clock, lines):
    with _progress(clock, total=None) as progress:
        clock.now = 10
        progress.advance(25)
    assert lines == [
        "work: 25 images, 2.5 images/s, elapsed 10 s",
        "work: 25 images in 10 s (2.5 images/s)",
    ]


def test_work_that_stops_early_says_so(clock, lines):
    with pytest.raises(KeyboardInterrupt), _progress(clock) as progress:
        clock.now = 3
        progress.advance(3)
        raise KeyboardInterrupt
    assert lines == ["work: stopped at 3/100 images (3%) after 3.0 s (1.0 images/s)"]


def test_disabled_progress_shows_nothing(clock, lines):
    stream = io.StringIO()
    with Progress("work", 5, stream=stream, clock=clock, enabled=False) as progress:
        clock.now = 60
        progress.advance(5)
    assert lines == [] and stream.getvalue() == ""
    assert progress.done == 5


def test_nothing_to_do_shows_nothing(clock, lines):
    terminal = Terminal()
    for _ in track([], "work", stream=terminal, clock=clock):
        pass
    with Progress("work", 0, clock=clock, stream=io.StringIO()):
        clock.now = 60
    assert lines == [] and terminal.getvalue() == ""


def test_a_terminal_gets_a_bar_and_no_log_lines(clock, lines):
    terminal = Terminal()
    with Progress("work", 4, unit="image", stream=terminal, clock=clock) as progress:
        for _ in range(3):
            progress.advance(1, note="loss 0.5")
    drawn = terminal.getvalue()
    assert "work" in drawn and "3/4" in drawn and "loss 0.5" in drawn
    assert "image/s" in drawn or "s/image" in drawn
    assert lines == []


def test_track_counts_an_item_once_the_loop_has_handled_it(clock, lines):
    seen = []
    for item in track([1, 2, 3], "items", interval_s=10, stream=io.StringIO(), clock=clock):
        clock.now += 10
        seen.append(item)
    assert seen == [1, 2, 3]
    assert lines[0].startswith("items: 1/3 items (33%), 10.0 s/item")
    assert lines[-1] == "items: 3/3 items (100%) in 30 s (10.0 s/item)"


def test_a_stage_is_announced_and_timed(clock, lines):
    with stage("loading model dino_vits16 on cpu", done="loaded", clock=clock):
        clock.now = 6.8
    assert lines == [
        "loading model dino_vits16 on cpu ...",
        "loading model dino_vits16 on cpu ... loaded in 6.8 s",
    ]


def test_a_failing_stage_says_it_failed(clock, lines):
    with pytest.raises(OSError), stage("reading", clock=clock):
        clock.now = 2
        raise OSError("gone")
    assert lines[-1] == "reading ... failed after 2.0 s"


def _wait_for(lines: list[str], text: str) -> None:
    finished = threading.Event()
    for _ in range(500):  # the background thread beats every few milliseconds here
        if any(text in line for line in lines):
            return
        finished.wait(0.01)
    raise AssertionError(f"{text!r} never logged: {lines}")


def test_the_background_thread_keeps_lines_coming_while_nothing_finishes(lines, monkeypatch):
    monkeypatch.setattr(progress_module, "BEAT_S", 0.005)
    with Progress("waiting", 3, unit="task", interval_s=0.01, stream=io.StringIO()):
        _wait_for(lines, "waiting: 0/3 tasks (0%), no task done yet")
    assert lines[-1].startswith("waiting: 0/3 tasks (0%) in ")
    assert not [t for t in threading.enumerate() if t.name == "zerolabel-progress"]


def test_a_long_stage_reminds_that_it_is_running(lines, monkeypatch):
    monkeypatch.setattr(progress_module, "BEAT_S", 0.005)
    with stage("clustering 4000 objects", interval_s=0.01):
        _wait_for(lines, "clustering 4000 objects ... still running after")
    assert lines[-1].startswith("clustering 4000 objects ... done in")


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(6.84, "6.8 s"), (42.4, "42 s"), (425, "7 min 05 s"), (7380, "2 h 03 min")],
)
def test_durations_read_as_people_say_them(seconds, shown):
    assert format_duration(seconds) == shown


def test_rates_below_one_per_second_read_as_seconds_per_item():
    assert format_rate(3.24, "image") == "3.2 images/s"
    assert format_rate(1 / 14, "task") == "14.0 s/task"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="must be >= 0"):
        Progress("work", -1, clock=FakeClock())
    with pytest.raises(ValueError, match="only grows"), Progress("w", clock=FakeClock()) as p:
        p.advance(-1)
