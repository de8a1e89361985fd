"""`autoroute report --html`: one self-contained HTML file (figures embedded as base64 PNG, no script, no CDN), with
a section per analysis that says "no data in window" when it has nothing to show; the PNGs also go to `--png-dir`."""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from router_plugins.datadir import write_atomically

from . import figures
from .overview import Analysis

NO_DATA = "no data in window"
FIGURES: dict[str, Callable[[Analysis], bytes | None]] = {
    "traffic": lambda a: figures.traffic_png(a.traffic),
    "cost": lambda a: figures.cost_png(a.traffic),
    "success": lambda a: figures.success_png(a.success),
    "latency": lambda a: figures.latency_png(a.latency),
    "layers": lambda a: figures.layers_png(a.layers),
    "confusion": lambda a: figures.confusion_png(a.confusion),
    "calibration": lambda a: figures.calibration_png(a.calibration),
    "importance": lambda a: figures.importance_png(a.feature_importance),
}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; } .none { color: #888; font-style: italic; } img { max-width: 100%; }
pre { background: #f7f7f7; padding: 0.7em; overflow-x: auto; font-size: 0.8em; }
nav a { margin-right: 1em; }
"""


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _usd(value: float | None) -> str:
    return "–" if value is None else f"${value:.6f}" if abs(value) < 0.01 else f"${value:.4f}"


def _ci(low: float | None, high: float | None) -> str:
    return "–" if low is None or high is None else f"[{100 * low:.1f}%, {100 * high:.1f}%]"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(name: str, png: bytes | None) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{name}" src="data:image/png;base64,{data}"></p>'


def _none(why: str = NO_DATA) -> str:
    return f'<p class="none">{html.escape(why)}</p>'


def _summary(a: Analysis) -> str:
    t = a.totals
    rows = [
        ("requests", t.requests), ("success", f"{_pct(t.success.rate)} {_ci(t.success.ci_low, t.success.ci_high)}"),
        ("needed a fallback", t.fallbacks), ("spend", _usd(t.cost_usd)),
        ("latency p50 / p95 (ms)", f"{_num(t.latency_ms.p50)} / {_num(t.latency_ms.p95)}"),
        ("with a feedback score", t.scored), ("mean feedback score", _num(t.mean_score, 3)),
        ("with a task label from feedback", t.labelled),
    ]  # fmt: skip
    table = _table(["", "value"], rows)
    if a.truncated:
        return table + _none(f"only the newest decisions were read: the window starts at {_utc(a.window.since)}")
    return table


def _traffic(a: Analysis, figs: dict[str, bytes | None]) -> str:
    if not a.traffic.requests:
        return _none()
    busy = [b for b in a.traffic.buckets if b.requests]
    rows = [(_utc(b.start), b.requests, b.failures, _usd(b.cost_usd), b.prompt_tokens, b.completion_tokens)
            for b in busy]  # fmt: skip
    headers = ["bucket start", "requests", "failures", "spend", "prompt tokens", "completion tokens"]
    text = (f"<p>{a.traffic.requests} requests, {_usd(a.traffic.cost_usd)} over buckets of {a.traffic.bucket_s} s "
            "(the buckets with traffic):</p>")  # fmt: skip
    return _img("traffic", figs.get("traffic")) + _img("cost", figs.get("cost")) + text + _table(headers, rows)


def _models(a: Analysis) -> str:
    if not a.models:
        return _none()
    rows = [(m.model, m.requests, _pct(m.share), m.attempts, _pct(m.success.rate),
             _ci(m.success.ci_low, m.success.ci_high), _num(m.latency_ms.p50), _num(m.latency_ms.p95),
             _usd(m.cost_usd), _num(m.mean_score, 3), m.scored,
             ", ".join(f"{k} {v}" for k, v in m.errors.items()) or "–") for m in a.models]  # fmt: skip
    headers = ["model", "requests served", "share", "attempts", "success", "95% CI", "p50 ms", "p95 ms", "spend",
               "mean score", "scored", "failed attempts"]  # fmt: skip
    return _table(headers, rows)


def _success(a: Analysis, figs: dict[str, bytes | None]) -> str:
    if not a.success.cells:
        return _none()
    rows = [(c.task, c.model, s.n, f"{s.successes:g}", _pct(s.rate), _ci(s.ci_low, s.ci_high), _num(c.mean_score, 3),
             c.scored) for c in a.success.cells for s in [c.success]]  # fmt: skip
    return _img("success", figs.get("success")) + _table(
        ["task", "model", "attempts", "successes", "success", "95% CI (Wilson)", "mean score", "scored"], rows
    )


def _latency(a: Analysis, figs: dict[str, bytes | None]) -> str:
    if not a.latency.models:
        return _none()
    rows = [(m.model, d.n, _num(d.mean), _num(d.p50), _num(d.p90), _num(d.p95), _num(d.p99), _num(d.min), _num(d.max))
            for m in a.latency.models for d in [m.latency_ms]]  # fmt: skip
    return _img("latency", figs.get("latency")) + _table(
        ["model", "successful attempts", "mean ms", "p50", "p90", "p95", "p99", "min", "max"], rows
    )


def _classifier(a: Analysis, figs: dict[str, bytes | None]) -> str:
    report = a.layers
    if not report.requests:
        return _none()
    rows = [(s.layer, s.decided, _pct(s.share), s.attempts, _pct(s.decide_rate), _num(s.mean_confidence, 3),
             _num(s.mean_latency_ms, 3), s.accuracy.n, _pct(s.accuracy.rate),
             _ci(s.accuracy.ci_low, s.accuracy.ci_high)) for s in report.layers]  # fmt: skip
    accuracy = (f"<p>Accuracy over the {report.judged} requests whose feedback named their task: "
                f"{_pct(report.accuracy.rate)} {_ci(report.accuracy.ci_low, report.accuracy.ci_high)}.</p>"
                if report.judged else _none("no feedback named a task in this window: no accuracy"))  # fmt: skip
    headers = ["layer", "decided", "share of requests", "attempts", "decided when asked", "mean confidence",
               "mean latency ms", "judged", "accuracy", "95% CI"]  # fmt: skip
    return _img("layers", figs.get("layers")) + _table(headers, rows) + accuracy


def _confusion(a: Analysis, figs: dict[str, bytes | None]) -> str:
    m = a.confusion
    if not m.n:
        return _none(f"{NO_DATA}: no feedback named a request's task")
    rows = [[label, *row, _pct(m.recall[label])] for label, row in zip(m.labels, m.counts)]
    rows.append(["precision", *[_pct(m.precision[label]) for label in m.labels], ""])
    return (_img("confusion", figs.get("confusion"))
            + f"<p>{m.n} labelled requests; accuracy {_pct(m.accuracy.rate)} "
            f"{_ci(m.accuracy.ci_low, m.accuracy.ci_high)}. Rows: the right task; columns: the classified task.</p>"
            + _table(["right \\ classified", *m.labels, "recall"], rows))  # fmt: skip


def _calibration(a: Analysis, figs: dict[str, bytes | None]) -> str:
    c = a.calibration
    if not c.n:
        return _none(f"{NO_DATA}: no decision of the {c.router} router got a feedback score")
    rows = [(f"{b.lower:.1f}–{b.upper:.1f}", b.n, _num(b.mean_predicted, 3), _num(b.observed.rate, 3),
             _ci(b.observed.ci_low, b.observed.ci_high)) for b in c.bins if b.n]  # fmt: skip
    return (_img("calibration", figs.get("calibration"))
            + f"<p>{c.n} decisions of the {c.router} router served by its first choice with a feedback score; "
            f"Brier score {_num(c.brier, 4)}, expected calibration error {_num(c.ece, 4)}.</p>"
            + _table(["predicted", "decisions", "mean predicted", "mean score", "95% CI (Wilson)"], rows))  # fmt: skip


def _importance(a: Analysis, figs: dict[str, bytes | None]) -> str:
    f = a.feature_importance
    if f is None:
        return _none(f"{NO_DATA}: not measured")
    method = f"<p>Method: {html.escape(f.method)}.</p>"
    if not f.groups:
        return method + _none(f"{NO_DATA}: {f.status}")
    rows = [(group, f"{value:.5f}") for group, value in f.groups.items()]
    text = f"<p>Learned router {html.escape(str(f.version))}, {f.n} scored outcomes.</p>"
    return (
        method + text + _img("importance", figs.get("importance")) + _table(["feature group", "Brier increase"], rows)
    )


def _ab(a: Analysis) -> str:
    if a.ab is None:
        return _none(f"{NO_DATA}: no decision in an A/B arm")
    from proxy.evaluation.ab import format_ab_report

    return f"<pre>{html.escape(format_ab_report(a.ab))}</pre>"


def _learning(a: Analysis) -> str:
    if not a.learning_events:
        return _none()
    rows = [(_utc(e["created_at"]), e["kind"], e["router"], e["version"], e["champion_version"] or "–",
             e["reason"] or "") for e in a.learning_events]  # fmt: skip
    return _table(["time", "kind", "router", "version", "replaced / champion", "reason"], rows)


def _recent(a: Analysis) -> str:
    if not a.recent:
        return _none()
    rows = [(d.request_id, _utc(d.created_at), d.requested_model, d.task or "–", d.layer or "–",
             d.selected_model or "–", f"{d.router}@{d.router_version}", d.status, d.attempts, _num(d.latency_ms),
             _usd(d.cost_usd), _num(d.feedback_score, 2)) for d in a.recent]  # fmt: skip
    headers = ["request id", "time", "requested", "task", "layer", "served by", "router", "status", "attempts",
               "latency ms", "cost", "score"]  # fmt: skip
    return _table(headers, rows)


def render_html(analysis: Analysis, figs: dict[str, bytes | None]) -> str:
    """The report page; `figs` maps figure names (`FIGURES`) to PNG bytes (None: not drawn)."""
    a = analysis
    sections = [
        ("summary", "Summary", _summary(a)),
        ("traffic", "Traffic and spend over time", _traffic(a, figs)),
        ("models", "Per model", _models(a)),
        ("success", "Success heatmap: task × model", _success(a, figs)),
        ("latency", "Latency distribution per model", _latency(a, figs)),
        ("classifier", "Classifier cascade: layer mix and per-layer performance", _classifier(a, figs)),
        ("confusion", "Confusion matrix of the task classifier", _confusion(a, figs)),
        ("calibration", "Calibration of the learned router", _calibration(a, figs)),
        ("importance", "Feature importance of the learned router", _importance(a, figs)),
        ("ab", "A/B test", _ab(a)),
        ("learning", "Learning events", _learning(a)),
        ("recent", "Recent decisions", _recent(a)),
    ]
    nav = "".join(f'<a href="#{key}">{html.escape(title.split(":")[0])}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{html.escape(title)}</h2>{content}</section>'
                   for key, title, content in sections)  # fmt: skip
    header = (f"<h1>autoroute analysis report</h1><p>Window {_utc(a.window.since)} to {_utc(a.window.until)}; "
              f"generated {_utc(time.time())}.</p>")  # fmt: skip
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>autoroute report</title>'
            f"<style>{STYLE}</style></head><body>{header}<nav>{nav}</nav>{body}</body></html>\n")  # fmt: skip


def draw_figures(analysis: Analysis) -> dict[str, bytes | None]:
    return {name: draw(analysis) for name, draw in FIGURES.items()}


def write_report(analysis: Analysis, out: Path | None, png_dir: Path | None = None) -> list[Path]:
    """Write the HTML page to `out` and each drawn figure to `png_dir/<name>.png`; returns the files written."""
    figs = draw_figures(analysis)
    written = []
    if png_dir is not None:
        for name, png in figs.items():
            if png is not None:
                written.append(_write(png_dir / f"{name}.png", png))
    if out is not None:
        written.append(_write(out, render_html(analysis, figs).encode("utf-8")))
    return written


def _write(path: Path, data: bytes) -> Path:
    return write_atomically(path, lambda handle: handle.write(data))
