"""The campaign report: success rate with its 95 % Wilson interval, the RMSE distribution, success
against each randomised parameter (PNG plots), and the worst flights with their .tlog kept.

`summarise(rows)` is pure; `write_report(folder_root, rows)` writes report.md, report.json, plots/ and
(optionally) the table as Parquet, and prunes the .tlogs of flights that are not among the worst.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.campaign.table import PARAM_COLUMNS

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (sound at 0 % and 100 %, unlike p +/- z*se)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarise(rows: Sequence[dict[str, Any]], worst: int = 10) -> dict[str, Any]:
    n = len(rows)
    ok = sum(r["outcome"] == "success" for r in rows)
    low, high = wilson_interval(ok, n)
    rmse = np.array([r["tracking_rmse_m"] for r in rows if r.get("tracking_rmse_m") is not None], float)
    rmse = rmse[np.isfinite(rmse)]

    def badness(r: dict[str, Any]) -> tuple[int, float]:
        rank = {"error": 2, "failure": 1}.get(r["outcome"], 0)
        value = r.get("tracking_rmse_m")
        return (rank, value if value is not None and math.isfinite(value) else math.inf)

    worst_rows = sorted(rows, key=badness, reverse=True)[:worst]
    reasons: dict[str, int] = {}
    for r in rows:
        if r["outcome"] != "success":
            key = (r.get("reason") or r["outcome"]).split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    return {
        "flights": n, "successes": ok, "failures": sum(r["outcome"] == "failure" for r in rows),
        "errors": sum(r["outcome"] == "error" for r in rows),
        "success_rate": ok / n if n else float("nan"), "success_rate_95ci": [low, high],
        "rmse_m": _quantiles(rmse), "failure_reasons": reasons,
        "worst": [{k: r.get(k) for k in ("index", "seed", "outcome", "reason", "tracking_rmse_m", "error")}
                  for r in worst_rows],
        "mean_wall_s": float(np.mean([r["wall_s"] for r in rows if r.get("wall_s") is not None])) if n else None,
    }


def _quantiles(x: np.ndarray) -> dict[str, float | None]:
    if not len(x):
        return {"n": 0, "mean": None, "p50": None, "p90": None, "max": None}
    return {"n": len(x), "mean": float(x.mean()), "p50": float(np.percentile(x, 50)),
            "p90": float(np.percentile(x, 90)), "max": float(x.max())}


def success_by_parameter(rows: Sequence[dict[str, Any]], name: str, bins: int = 5) -> list[dict[str, Any]]:
    """Success rate (with its Wilson interval) in `bins` equal-count bins of one parameter."""
    pairs = sorted((r[name], r["outcome"] == "success") for r in rows if r.get(name) is not None)
    out = []
    for chunk in np.array_split(np.arange(len(pairs)), min(bins, len(pairs))) if pairs else []:
        if not len(chunk):
            continue
        values = [pairs[i][0] for i in chunk]
        ok = sum(pairs[i][1] for i in chunk)
        out.append({"low": values[0], "high": values[-1], "n": len(chunk), "successes": ok,
                    "rate": ok / len(chunk), "ci": wilson_interval(ok, len(chunk))})
    return out


def plot_report(rows: Sequence[dict[str, Any]], plots: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    written = []
    rmse = [r["tracking_rmse_m"] for r in rows if r.get("tracking_rmse_m") is not None
            and math.isfinite(r["tracking_rmse_m"])]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(rmse, bins=30, color="tab:blue")
    ax.set_xlabel("tracking RMSE (m)")
    ax.set_ylabel("flights")
    ax.set_title(f"Tracking RMSE over {len(rmse)} flights")
    fig.tight_layout()
    fig.savefig(plots / "rmse_hist.png", dpi=100)
    plt.close(fig)
    written.append(plots / "rmse_hist.png")
    varied = [p for p in PARAM_COLUMNS if len({r.get(p) for r in rows}) > 1]
    if varied:
        cols = 3
        nrows = math.ceil(len(varied) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
        for ax, name in zip(axes.flat, varied, strict=False):
            table = success_by_parameter(rows, name)
            mids = [(b["low"] + b["high"]) / 2 for b in table]
            rates = [b["rate"] for b in table]
            err = np.array([[b["rate"] - b["ci"][0] for b in table], [b["ci"][1] - b["rate"] for b in table]])
            ax.errorbar(mids, rates, yerr=err, marker="o", capsize=3)
            ax.set_ylim(-0.05, 1.05)
            ax.set_xlabel(name)
            ax.set_ylabel("success rate")
            flew = [(r[name], r["tracking_rmse_m"]) for r in rows
                    if r.get(name) is not None and r.get("tracking_rmse_m") is not None]
            if flew:  # the RMSE says what a flat success rate hides
                twin = ax.twinx()
                twin.scatter(*zip(*flew, strict=True), s=6, color="tab:orange", alpha=0.5)
                twin.set_ylabel("tracking RMSE (m)", color="tab:orange")
        for ax in list(axes.flat)[len(varied):]:
            ax.set_visible(False)
        fig.suptitle("Success rate per equal-count bin (blue, 95 % Wilson) and tracking RMSE per flight (orange)")
        fig.tight_layout()
        fig.savefig(plots / "success_vs_params.png", dpi=100)
        plt.close(fig)
        written.append(plots / "success_vs_params.png")
    return written


def write_report(root: Path, rows: Sequence[dict[str, Any]], worst: int = 10, parquet: bool = False,
                 keep_all_tlogs: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """report.md + report.json + plots/ in the campaign folder; returns the summary."""
    root = Path(root)
    summary = summarise(rows, worst)
    if extra:
        summary.update(extra)
    plots = plot_report(rows, root / "plots")
    keep = {w["index"] for w in summary["worst"]}
    tlogs = root / "tlogs"
    if tlogs.exists() and not keep_all_tlogs:
        for path in tlogs.glob("flight-*.tlog"):
            if int(path.stem.split("-")[1]) not in keep:
                path.unlink()
    if parquet:
        import pandas as pd

        pd.DataFrame(list(rows)).to_parquet(root / "results.parquet")  # needs pyarrow
    (root / "report.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    (root / "report.md").write_text(_markdown(summary, rows, plots, root))
    return summary


def _markdown(s: dict[str, Any], rows: Sequence[dict[str, Any]], plots: list[Path], root: Path) -> str:
    low, high = s["success_rate_95ci"]
    r = s["rmse_m"]
    lines = [
        "# Campaign report", "",
        f"- flights: {s['flights']} ({s['successes']} success, {s['failures']} failure, {s['errors']} error)",
        f"- success rate: {100 * s['success_rate']:.1f} % (95 % Wilson interval {100 * low:.1f}-{100 * high:.1f} %)",
    ]
    if r["n"]:
        lines.append(f"- tracking RMSE: mean {r['mean']:.3f} m, p50 {r['p50']:.3f} m, p90 {r['p90']:.3f} m, "
                     f"max {r['max']:.3f} m ({r['n']} flights that flew)")
    rates = s.get("flights_per_min") or {}
    parts = [f"{label} {v['flights_per_min']:.2f}/min ({v['flights']} flights)" for label, v in rates.items()
             if isinstance(v, dict)]
    if parts:
        ratio = f", ratio x{rates['ratio']:.2f}" if "ratio" in rates else ""
        lines.append(f"- flights per minute: {', '.join(parts)}{ratio}")
    faulted = [r for r in rows if r.get("faults_to_runtime") or r.get("faults_to_vehicle")]
    if faulted and len(faulted) < len(rows):
        clean = [r for r in rows if r not in faulted]
        rate = {name: sum(r["outcome"] == "success" for r in group) / len(group)
                for name, group in (("with", faulted), ("without", clean))}
        lines.append(f"- success with link faults {100 * rate['with']:.1f} % of {len(faulted)}, without "
                     f"{100 * rate['without']:.1f} % of {len(clean)}")
    if s["failure_reasons"]:
        lines.append("- why flights did not succeed: " + ", ".join(f"{k} ({v})" for k, v in
                                                                  sorted(s["failure_reasons"].items())))
    lines += ["", "## Worst flights", "", "| flight | seed | outcome | RMSE (m) | reason | tlog |",
              "| --- | --- | --- | --- | --- | --- |"]
    for w in s["worst"]:
        tlog = root / "tlogs" / f"flight-{w['index']:04d}.tlog"
        rmse = w["tracking_rmse_m"]
        lines.append(f"| {w['index']} | {w['seed']} | {w['outcome']} | "
                     f"{'-' if rmse is None else f'{rmse:.3f}'} | {w['reason'] or ''} {w.get('error') or ''} | "
                     f"{tlog.relative_to(root) if tlog.exists() else '-'} |")
    lines += ["", "Replay one: `dreamlink replay --campaign DIR --flight N`.", "", "## Success against parameters", ""]
    for name in PARAM_COLUMNS:
        if len({row.get(name) for row in rows}) > 1:
            bins = success_by_parameter(rows, name)
            cells = ", ".join(f"[{b['low']:.3g}, {b['high']:.3g}]: {100 * b['rate']:.0f} % of {b['n']}" for b in bins)
            lines.append(f"- {name}: {cells}")
    lines += [""] + [f"![{p.stem}]({p.relative_to(root)})" for p in plots] + [""]
    return "\n".join(lines)
