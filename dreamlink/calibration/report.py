"""The calibration report: `calibration.md` and its plots, written next to the calibrated bundle.

Plots: error vs horizon per precision (`kstep_error.png`), planning latency vs K per precision
(`latency_vs_k.png`), closed-loop tracking RMSE per precision (`closed_loop.png`, when flown).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dreamlink.calibration.kstep import KStepCurve


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(sweep: Sequence[Mapping[str, Any]], path: Path, horizon: int, limit_ms: float) -> Path:
    """p99 (solid) and median (dotted) planning latency vs K at `horizon`, per precision."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in dict.fromkeys(p["precision"] for p in sweep):
        pts = sorted((p for p in sweep if p["precision"] == name and p["horizon"] == horizon),
                     key=lambda p: p["samples"])
        if not pts:
            continue
        ks = [p["samples"] for p in pts]
        line = ax.plot(ks, [p["p99_ms"] for p in pts], marker="o", label=f"{name} p99")[0]
        ax.plot(ks, [p["median_ms"] for p in pts], ls=":", color=line.get_color())
    ax.axhline(limit_ms, color="grey", ls="--", lw=1, label=f"budget {limit_ms:.1f} ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("samples K")
    ax.set_ylabel("planning step (ms)")
    ax.set_title(f"Planning latency vs K at H={horizon} (one thread; dotted: median)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_closed_loop(summary: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Tracking RMSE per seed (dots) and mean (bar) per precision."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    names = list(summary)
    for i, name in enumerate(names):
        per_seed = list(summary[name]["rmse_per_seed_m"].values())
        ax.bar(i, summary[name]["rmse_mean_m"], color="C0" if name.startswith("fp32") else "C1", alpha=0.5)
        ax.plot([i] * len(per_seed), per_seed, "k.", ms=5)
    ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel("figure-eight tracking RMSE (m)")
    ax.set_title("Closed loop, lockstep quad SITL (bars: mean; dots: seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def write_report(out_dir: Path, result: Mapping[str, Any], curves: Mapping[str, KStepCurve]) -> Path:
    """`calibration.md` (and the plots) from the JSON-able calibration `result` and the k-step curves."""
    from dreamlink.reports import plot_kstep

    out_dir.mkdir(parents=True, exist_ok=True)
    tol = result["tolerance"]
    plot_kstep(dict(curves), out_dir / "kstep_error.png", tol["kstep_tolerance"])
    budget = result.get("budget") or {}
    lines = [f"# Calibration: {result['bundle']}", "",
             f"Data: {result['data']['train']} training / {result['data']['holdout']} held-out transitions "
             f"({', '.join(result['data']['sources'])}). Device: {budget.get('device', '–')}. "
             f"{result.get('machine_note', '')}", "",
             f"**Chosen precision: {result['chosen']}**, planner K={result['planner']['samples']} x "
             f"H={result['planner']['horizon']}; recommended horizon {result['horizon']} "
             f"(normalised k-step RMSE < {tol['kstep_tolerance']:g}); ensemble disagreement threshold "
             f"{_fmt(result['disagreement_threshold'], 4)} (state half-ranges).", ""]
    if result.get("refused"):
        lines += ["Refused precisions (fp32 kept where none passed):", ""]
        lines += [f"- `{n}`: {why}" for n, why in result["refused"].items()]
        lines.append("")
    lines += ["## Accuracy on held-out data", "",
              "| precision | one-step | k=5 | k=H | k=H_max | own horizon | action vs fp32 (RMS / max) | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    h = result["horizon"]
    for name, a in result["accuracy"].items():
        c = curves[name].normalised_rmse
        v = result["verdicts"][name]
        lines.append(f"| {name} | {_fmt(a['one_step'], 4)} | {_fmt(float(c[min(4, len(c) - 1)]), 4)} | "
                     f"{_fmt(float(c[min(h, len(c)) - 1]), 4)} | {_fmt(float(c[-1]), 4)} | "
                     f"{v['recommended_horizon']} | "
                     f"{_fmt(a['action_error'], 4)} / {_fmt(a['action_error_max'], 4)} | "
                     f"{'accepted' if v['accepted'] else 'refused'}: {v['reason']} |")
    lines += ["", "![error vs horizon](kstep_error.png)", ""]
    fp16 = result.get("fp16")
    if fp16:
        lines += [f"fp16: {fp16['detail']}.", ""]
    if budget:
        lines += ["## Device budget", "",
                  f"Largest setting whose p99 fits {budget['share']:.0%} of the {budget['period_ms']:.1f} ms period "
                  f"({budget['share'] * budget['period_ms']:.2f} ms): **{budget['precision']} K={budget['samples']} x "
                  f"H={budget['horizon']}**, p99 {budget['p99_ms']:.2f} ms (median {budget['median_ms']:.2f} ms), "
                  f"max rate {budget['rate_hz']:.1f} Hz" + ("" if budget["fits"] else " — NOTHING FITS: the "
                                                               "runtime will refuse this rate") + ".", "",
                  "| precision | K | H | median ms | p99 ms | CPU median ms |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {p['precision']} | {p['samples']} | {p['horizon']} | {p['median_ms']:.2f} | {p['p99_ms']:.2f} | "
                  f"{p['cpu_median_ms']:.2f} |" for p in budget["sweep"]]
        hs = sorted({p["horizon"] for p in budget["sweep"]})
        h_plot = 15 if 15 in hs else hs[len(hs) // 2]
        plot_latency(budget["sweep"], out_dir / "latency_vs_k.png", h_plot, budget["share"] * budget["period_ms"])
        lines += ["", "![latency vs K](latency_vs_k.png)", ""]
    speed = result.get("speedup")
    if speed:
        lines += ["## Speed at the issue's point", "",
                  f"K={speed['samples']}, H={speed['horizon']}, one thread, interleaved round-robin steps "
                  f"(ratios of medians, so load from other processes falls on every precision alike):", "",
                  "| precision | median ms | CPU median ms | speed-up vs fp32 (wall) | (CPU) |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {n} | {s['median_ms']:.2f} | {s['cpu_median_ms']:.2f} | {s['speedup']:.2f}x | "
                  f"{s['cpu_speedup']:.2f}x |" for n, s in speed["precisions"].items()]
        lines.append("")
    loop = result.get("closed_loop")
    if loop:
        cl = loop["summary"]
        lines += ["## Closed loop", "",
                  f"Figure-eight, {loop['laps']:g} lap, lockstep quad SITL ({loop['flavour']}), seeds {loop['seeds']}, "
                  f"planner K={loop['planner']['samples']} x H={loop['planner']['horizon']}:", "",
                  "| precision | flights | landed | mean RMSE m | median RMSE m | vs fp32 | within 10% |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {n} | {s['flights']} | {s['succeeded']} | {_fmt(s['rmse_mean_m'])} | "
                  f"{_fmt(s['rmse_median_m'])} | {_fmt(s['ratio_to_fp32'])} | {'yes' if s['within'] else 'NO'} |"
                  for n, s in cl.items()]
        plot_closed_loop(cl, out_dir / "closed_loop.png")
        lines += ["", "![closed loop](closed_loop.png)", ""]
    path = out_dir / "calibration.md"
    path.write_text("\n".join(lines) + "\n")
    return path
