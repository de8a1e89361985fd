"""The report's figures as PNG bytes (matplotlib with the Agg backend, imported when the first figure is drawn).
Each function returns None when its analysis has no data, so the report says so instead of drawing empty axes."""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any

from .classifier import ConfusionMatrix, LayerReport
from .learned import Calibration, FeatureImportance
from .traffic import LatencyReport, SuccessMatrix, TrafficSeries

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buffer.getvalue()


def _clock(ts: float, bucket_s: int) -> str:
    return time.strftime("%m-%d %H:%M" if bucket_s < 86_400 else "%Y-%m-%d", time.gmtime(ts))


def traffic_png(traffic: TrafficSeries) -> bytes | None:
    """Requests per bucket, stacked by the model that served them."""
    if not traffic.requests:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    starts = [b.start for b in traffic.buckets]
    models = sorted({m for b in traffic.buckets for m in b.by_model})
    bottom = [0] * len(starts)
    for model in models:
        counts = [b.by_model.get(model, 0) for b in traffic.buckets]
        ax.bar(starts, counts, width=traffic.bucket_s * 0.9, bottom=bottom, align="edge", label=model)
        bottom = [x + y for x, y in zip(bottom, counts)]
    _time_axis(ax, traffic)
    ax.set_ylabel(f"requests per {traffic.bucket_s // 60} min" if traffic.bucket_s < 86_400 else "requests per day")
    ax.legend(fontsize=7, ncol=min(4, len(models)), loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def cost_png(traffic: TrafficSeries) -> bytes | None:
    """Spend per bucket and cumulated over the window."""
    if not traffic.requests:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    starts = [b.start for b in traffic.buckets]
    costs = [b.cost_usd for b in traffic.buckets]
    ax.bar(starts, costs, width=traffic.bucket_s * 0.9, align="edge", color="tab:orange", label="per bucket")
    ax.set_ylabel("USD per bucket")
    total = ax.twinx()
    running, cumulative = 0.0, []
    for cost in costs:
        running += cost
        cumulative.append(running)
    total.step([s + traffic.bucket_s for s in starts], cumulative, where="pre", color="black", label="cumulative")
    total.set_ylabel("USD cumulative")
    _time_axis(ax, traffic)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _time_axis(ax: Any, traffic: TrafficSeries) -> None:
    starts = [b.start for b in traffic.buckets]
    step = max(1, len(starts) // 8)
    ax.set_xticks(starts[::step])
    ax.set_xticklabels([_clock(s, traffic.bucket_s) for s in starts[::step]], rotation=30, fontsize=7, ha="right")
    ax.set_xlabel("UTC")


def _heatmap(ax: Any, values: list[list[float | None]], rows: list[str], columns: list[str], cmap: str,
             vmax: float | None) -> Any:  # fmt: skip
    import numpy as np

    grid = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    return image


def success_png(matrix: SuccessMatrix) -> bytes | None:
    """Task × model attempt success rate; each cell says k/n and its Wilson interval."""
    if not matrix.cells:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(matrix.models), 1.2 + 0.55 * len(matrix.tasks)))
    values: list[list[float | None]] = [[None] * len(matrix.models) for _ in matrix.tasks]
    for cell in matrix.cells:
        i, j = matrix.tasks.index(cell.task), matrix.models.index(cell.model)
        values[i][j] = cell.success.rate
        label = f"{cell.success.successes:g}/{cell.success.n}\n[{cell.success.ci_low:.2f}, {cell.success.ci_high:.2f}]"
        ax.text(j, i, label, ha="center", va="center", fontsize=7)
    image = _heatmap(ax, values, matrix.tasks, matrix.models, "RdYlGn", 1.0)
    fig.colorbar(image, ax=ax, label="attempt success rate")
    return _png(fig)


def latency_png(report: LatencyReport) -> bytes | None:
    """Per model histogram of successful attempts' latency over shared log-spaced bins."""
    if not report.models:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for model in report.models:
        label = f"{model.model} (p50 {model.latency_ms.p50:.0f} ms, p95 {model.latency_ms.p95:.0f} ms)"
        ax.stairs(model.counts, report.edges_ms, label=label, linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("successful attempts")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def layers_png(report: LayerReport) -> bytes | None:
    """Requests decided per classifier layer."""
    if not report.requests:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.4 * len(report.layers)))
    names = [layer.layer for layer in report.layers][::-1]
    ax.barh(names, [layer.decided for layer in report.layers][::-1], color="tab:blue")
    ax.set_xlabel("requests decided")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def confusion_png(matrix: ConfusionMatrix) -> bytes | None:
    """Right task (feedback) × classified task, with counts."""
    if not matrix.n:
        return None
    plt = _pyplot()
    size = 1.8 + 0.6 * len(matrix.labels)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = _heatmap(ax, [[float(c) for c in row] for row in matrix.counts], matrix.labels, matrix.labels, "Blues",
                     None)  # fmt: skip
    for i, row in enumerate(matrix.counts):
        for j, count in enumerate(row):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
    ax.set_xlabel("classified as")
    ax.set_ylabel("right task (feedback)")
    fig.colorbar(image, ax=ax, label="requests")
    return _png(fig)


def calibration_png(calibration: Calibration) -> bytes | None:
    """Mean feedback score against mean predicted success probability per bin, with Wilson intervals."""
    if not calibration.n:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    bins = [b for b in calibration.bins if b.n]
    x = [b.mean_predicted or 0.0 for b in bins]
    y = [b.observed.rate or 0.0 for b in bins]
    low = [b.observed.ci_low or 0.0 for b in bins]
    high = [b.observed.ci_high or 0.0 for b in bins]
    errors = [[yi - lo for yi, lo in zip(y, low)], [hi - yi for yi, hi in zip(y, high)]]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.errorbar(x, y, yerr=errors, fmt="o-", capsize=3, label=f"{calibration.router} (n={calibration.n})")
    for b, xi, yi in zip(bins, x, y):
        ax.annotate(str(b.n), (xi, yi), fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted success probability")
    ax.set_ylabel("observed (mean feedback score)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def importance_png(importance: FeatureImportance | None) -> bytes | None:
    """Brier increase per shuffled feature group."""
    if importance is None or not importance.groups:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.45 * len(importance.groups)))
    names = list(importance.groups)[::-1]
    ax.barh(names, [importance.groups[n] for n in names], color="tab:purple")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("Brier score increase when shuffled")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)
