"""PNG plots of evaluation reports (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router_plugins.routing_metrics import Point, upper_hull


def plot_offline(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    points = [Point(p["cost"], p["quality"], p["setting"]) for p in report["curve"] if p["cost"] is not None]
    has_cost = bool(points)
    if has_cost:
        ax.plot(
            [p.cost for p in points],
            [p.quality for p in points],
            "o",
            ms=3,
            alpha=0.5,
            label=f"{report['router']} settings",
        )
        hull = upper_hull(points)
        ax.plot(
            [x for x, _ in hull], [y for _, y in hull], "-", lw=2, label=f"{report['router']} (AIQ {report['aiq']:.3f})"
        )
    for name, model in report["models"].items():
        x = model["cost"] if has_cost else 0.0
        ax.plot([x], [model["quality"]], "s", color="grey", ms=5)
        ax.annotate(
            name.split("/")[-1][:24], (x, model["quality"]), fontsize=7, xytext=(3, 2), textcoords="offset points"
        )
    oracle = report["oracle"]
    if oracle["cost"] is not None or not has_cost:
        ax.plot([oracle["cost"] or 0.0], [oracle["quality"]], "*", color="gold", ms=14, mec="black", label="oracle")
    best = report["best_single"]
    ax.set_title(f"{report['router']} on {report['n_test']} prompts; best single: {best['model']}")
    ax.set_xlabel("mean cost per prompt (USD)" if has_cost else "(no cost data)")
    ax.set_ylabel("mean quality")
    if has_cost:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
