"""Progress of long work (embedding, training, evaluation, replay): a bar on a terminal, log lines otherwise.

Long loops say what they do and how far they got (`Progress`, `track`); whether and how that is shown is the caller's
choice, made once with `shown()` (the `autoroute` commands do, `serve` does not):

- on a terminal (the stream is a TTY): one line redrawn in place, at most every `REDRAW_S`:
  `embedding  [########------------]  912/2205 texts  41%  23.1/s  ~56 s left`;
- otherwise (CI, a file, a pipe): a log line every `LOG_EVERY_S` while it runs, and one when it ends if it logged
  before, so short work stays quiet and long work is never silent;
- not shown at all without `shown()`: the gateway's own long work and library users see nothing they did not ask for;
- work started while other work is shown (the folds of a cross-validation, each fitting a router) is not shown
  itself: one line at a time, the outermost.

The choice lives in a context variable, so it follows the work into asyncio tasks and `asyncio.to_thread` without
being passed down every call; a plain thread starts without it (and shows nothing).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import TextIO, TypeVar

log = logging.getLogger("autoroute.progress")

REDRAW_S = 0.1
LOG_EVERY_S = 10.0
BAR_WIDTH = 24
T = TypeVar("T")


@dataclass(frozen=True)
class _Display:
    stream: TextIO
    tty: bool
    every_s: float
    shown: list[Progress] = field(default_factory=list)
    """The work being shown (at most one): work started meanwhile is not."""


_display: ContextVar[_Display | None] = ContextVar("autoroute_progress", default=None)


@contextlib.contextmanager
def shown(stream: TextIO | None = None, *, tty: bool | None = None, every_s: float = LOG_EVERY_S) -> Iterator[None]:
    """Show the progress of the work done inside: a bar when `stream` (default stderr) is a terminal, log lines
    every `every_s` otherwise. `tty` overrides the detection."""
    target = stream if stream is not None else sys.stderr
    is_tty = bool(getattr(target, "isatty", lambda: False)()) if tty is None else tty
    token = _display.set(_Display(target, is_tty, every_s))
    try:
        yield
    finally:
        _display.reset(token)


class Progress:
    """One piece of long work: `update(n)` as it advances, `close()` (or a `with` block) when it ends."""

    def __init__(self, label: str, total: int | None = None, unit: str = "", *,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        display = _display.get()
        self._display = display if display is not None and not display.shown else None
        if self._display is not None:
            self._display.shown.append(self)
        self._clock = clock
        self._started = self._last = clock()
        self._drawn = False
        self._logged = False
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.done += n
        display = self._display
        if display is None:
            return
        now = self._clock()
        if display.tty:
            if now - self._last >= REDRAW_S or (self.total is not None and self.done >= self.total):
                self._draw(display, now)
        elif now - self._last >= display.every_s:
            self._log(now)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        display = self._display
        if display is None:
            return
        display.shown.remove(self)
        now = self._clock()
        if display.tty:
            if self._drawn or self.done:
                self._draw(display, now)
                display.stream.write("\n")
                display.stream.flush()
        elif self._logged:
            self._log(now, finished=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def line(self, now: float, *, bar: bool = False) -> str:
        """The progress as text: `label  [bar]  done/total unit  pct  rate/s  ~eta left` (the bar on terminals)."""
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            share = min(self.done / self.total, 1.0)
            parts = [self.label]
            if bar:
                filled = int(share * BAR_WIDTH)
                parts.append(f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}]")
            parts += [f"{self.done}/{self.total}{unit}", f"{share:.0%}", _rate(rate)]
            if 0 < self.done < self.total and rate > 0:
                parts.append(f"~{_duration((self.total - self.done) / rate)} left")
            elif self.done >= self.total:
                parts.append(f"in {_duration(elapsed)}")
        else:
            parts = [self.label, f"{self.done}{unit}", _rate(rate), _duration(elapsed)]
        return "  ".join(parts)

    def _draw(self, display: _Display, now: float) -> None:
        display.stream.write("\r" + self.line(now, bar=True) + "\033[K")  # \033[K clears a longer previous line
        display.stream.flush()
        self._drawn = True
        self._last = now

    def _log(self, now: float, *, finished: bool = False) -> None:
        log.info("%s%s", self.line(now), " (done)" if finished else "")
        self._logged = True
        self._last = now


def track(items: Iterable[T], label: str, total: int | None = None, unit: str = "") -> Iterator[T]:
    """`items`, reporting each one taken as progress (`total` defaults to `len(items)` when it has one)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with Progress(label, total, unit) as progress:
        for item in items:
            yield item
            progress.update()


def _rate(per_second: float) -> str:
    """Items per second, or seconds per item when each takes longer than a second (folds, fits)."""
    if per_second >= 1 or per_second == 0:
        return f"{per_second:.1f}/s"
    return f"{1 / per_second:.1f} s each"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


__all__ = ["Progress", "shown", "track"]
