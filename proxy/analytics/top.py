"""`autoroute top`: the terminal dashboard. The classifier cascade (requests per deciding layer, with bars and
shares) and each layer's performance, then per model traffic, success, latency and spend over the last hours;
`--live` redraws it every few seconds (escape codes only on a terminal) until Ctrl-C or `--iterations`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from .classifier import layer_report
from .estimates import Rate
from .overview import totals
from .traffic import model_stats
from .window import WindowData

BAR_WIDTH = 28
_EIGHTHS = " ▏▎▍▌▋▊▉"
CLEAR = "\x1b[H\x1b[2J"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`fraction` of `width` cells in unicode blocks (eighths of a cell), padded with spaces to `width`."""
    eighths = round(min(max(fraction, 0.0), 1.0) * width * 8)
    text = "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")
    return text.ljust(width)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _rate(r: Rate) -> str:
    if r.rate is None or r.ci_low is None or r.ci_high is None:
        return "–"
    return f"{100 * r.rate:.1f}% [{100 * r.ci_low:.0f}-{100 * r.ci_high:.0f}]"


def _usd(value: float) -> str:
    return f"${value:.6f}" if value < 10 else f"${value:,.2f}"


def render_top(data: WindowData, hours: float) -> str:
    """One frame of the dashboard over `data` (the last `hours`)."""
    since, until = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) for t in (data.window.since, data.window.until))
    t = totals(data)
    lines = [
        f"autoroute top: last {hours:g} h ({since} to {until} UTC)",
        f"requests {t.requests}   success {_rate(t.success)}   fallbacks {t.fallbacks}   spend {_usd(t.cost_usd)}   "
        f"latency p50 {_ms(t.latency_ms.p50)} ms  p95 {_ms(t.latency_ms.p95)} ms   feedback {t.scored} scored, "
        f"{t.labelled} task labels",
    ]
    if not t.requests:
        return "\n".join([*lines, "", "no requests in the window"])
    layers = layer_report(data)
    width = max([len(s.layer) for s in layers.layers] + [len("layer")]) + 2
    lines += ["", "Cascade: requests per deciding layer"]
    for s in layers.layers:
        lines.append(f"  {s.layer:<{width}}{bar(s.share or 0.0)} {s.decided:>7} {_pct(s.share):>7}")
    lines += ["", "Per-layer performance",
              f"  {'layer':<{width}}{'attempts':>9} {'decided':>8} {'share decided':>14} {'mean conf':>10} "
              f"{'mean ms':>9}  accuracy (judged)"]  # fmt: skip
    for s in layers.layers:
        accuracy = f"{_rate(s.accuracy)} ({s.accuracy.n})" if s.accuracy.n else "– (no labels)"
        confidence = "–" if s.mean_confidence is None else f"{s.mean_confidence:.3f}"
        latency = "–" if s.mean_latency_ms is None else f"{s.mean_latency_ms:.3f}"
        lines.append(f"  {s.layer:<{width}}{s.attempts:>9} {s.decided:>8} {_pct(s.decide_rate):>14} {confidence:>10} "
                     f"{latency:>9}  {accuracy}")  # fmt: skip
    models = model_stats(data)
    width = max([len(m.model) for m in models] + [len("model")]) + 2
    lines += ["", f"Per model ({t.requests} requests)",
              f"  {'model':<{width}}{'requests':>9} {'share':>7} {'':<{BAR_WIDTH // 2}} {'attempts':>9} "
              f"{'success [95% CI]':>22} {'p50 ms':>8} {'p95 ms':>8} {'spend':>12}"]  # fmt: skip
    for m in models:
        lines.append(
            f"  {m.model:<{width}}{m.requests:>9} {_pct(m.share):>7} {bar(m.share or 0.0, BAR_WIDTH // 2)} "
            f"{m.attempts:>9} {_rate(m.success):>22} {_ms(m.latency_ms.p50):>8} {_ms(m.latency_ms.p95):>8} "
            f"{_usd(m.cost_usd):>12}"
        )
    if data.truncated:
        lines.append("(only the newest decisions were read)")
    return "\n".join(lines)


def run_top(
    frame: Callable[[], str],
    out: TextIO,
    *,
    live: bool = False,
    interval_s: float = 5.0,
    iterations: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print `frame()` once, or with `live` every `interval_s` until Ctrl-C or `iterations` frames. On a terminal
    each frame replaces the last; elsewhere (a pipe, a file) frames follow each other with no escape codes."""
    tty = out.isatty()
    shown = 0
    try:
        while True:
            text = frame()
            if live and tty:
                out.write(CLEAR)
            elif shown:
                out.write("\n")
            out.write(text + "\n")
            out.flush()
            shown += 1
            if not live or (iterations is not None and shown >= iterations):
                return 0
            sleep(interval_s)
    except KeyboardInterrupt:
        out.write("\n")
        return 0
