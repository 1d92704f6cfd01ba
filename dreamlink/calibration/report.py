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


def plot_closed_loop(summary: Mapping[str, Mapping[str, Any]], path: Path, speed: Mapping[str, Any] | None = None,
                     max_ratio: float = 1.10, noise: str | None = None) -> Path:
    """Left: speed-up over fp32 per precision (when measured). Right: tracking RMSE per seed (dots, one line
    per seed joining the precisions: the pairing), mean (bar) and fp32's mean x `max_ratio` (the gate)."""
    plt = _pyplot()
    fig, (ax_s, ax) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 2]})
    names = list(summary)
    sp = (speed or {}).get("precisions", {})
    speed_names = [n for n in names if n in sp] or list(sp)
    ax_s.bar(range(len(speed_names)), [sp[n]["speedup"] for n in speed_names],
             color=["C0" if n.startswith("fp32") else "C1" for n in speed_names], alpha=0.7)
    for i, n in enumerate(speed_names):
        ax_s.annotate(f"{sp[n]['speedup']:.2f}x", (i, sp[n]["speedup"]), textcoords="offset points", xytext=(0, 4),
                      ha="center", fontsize=8)
    ax_s.axhline(1.0, color="grey", lw=1)
    ax_s.set_xticks(range(len(speed_names)), speed_names, rotation=15, fontsize=8)
    ax_s.set_ylabel("planning speed-up vs fp32 (wall)")
    title = f"Speed, K={speed['samples']} x H={speed['horizon']}, one thread" if speed else "Speed: not measured"
    ax_s.set_title(title, fontsize=9)
    seeds = sorted({k for s in summary.values() for k in s["rmse_per_seed_m"]}, key=int)
    for seed in seeds:
        ys = [summary[n]["rmse_per_seed_m"].get(seed, float("nan")) for n in names]
        ax.plot(range(len(names)), ys, "-", color="grey", lw=0.6, alpha=0.6)
    for i, name in enumerate(names):
        per_seed = list(summary[name]["rmse_per_seed_m"].values())
        colour = "C2" if name == noise else "C0" if name.startswith("fp32") else "C1"
        ax.bar(i, summary[name]["rmse_mean_m"], color=colour, alpha=0.5)
        ax.plot([i] * len(per_seed), per_seed, "k.", ms=5)
        ax.annotate(f"{summary[name]['ratio_to_fp32']:.2f}x", (i, summary[name]["rmse_mean_m"]),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    if "fp32" in summary and math.isfinite(summary["fp32"]["rmse_mean_m"]):
        ax.axhline(summary["fp32"]["rmse_mean_m"] * max_ratio, color="C3", ls="--", lw=1,
                   label=f"gate: {max_ratio:.2f}x fp32 mean")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel("figure-eight tracking RMSE (m)")
    ax.set_title("Closed loop, lockstep quad SITL (bars: mean; dots/lines: paired seeds)", fontsize=9)
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
        lines += ["## Speed at the reference point (K=512 x H=15, one thread)", "",
                  f"K={speed['samples']}, H={speed['horizon']}, one thread, interleaved round-robin steps "
                  f"(ratios of medians, so load from other processes falls on every precision alike):", "",
                  "| precision | median ms | CPU median ms | speed-up vs fp32 (wall) | (CPU) |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {n} | {s['median_ms']:.2f} | {s['cpu_median_ms']:.2f} | {s['speedup']:.2f}x | "
                  f"{s['cpu_speedup']:.2f}x |" for n, s in speed["precisions"].items()]
        lines.append("")
    loop = result.get("closed_loop")
    if loop:
        lines += closed_loop_section(loop, speed)
        plot_closed_loop(loop["summary"], out_dir / "closed_loop.png", speed,
                         loop.get("gate", {}).get("max_ratio", 1.10), loop.get("noise_reference"))
        lines += ["![closed loop](closed_loop.png)", ""]
    path = out_dir / "calibration.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def closed_loop_section(loop: Mapping[str, Any], speed: Mapping[str, Any] | None) -> list[str]:
    """Markdown: speed-up and closed-loop RMSE side by side per precision, the gate's verdict, per-seed RMSE."""
    cl = loop["summary"]
    gate = loop.get("gate", {})
    max_ratio = gate.get("max_ratio", 1.10)
    noise = loop.get("noise_reference")
    sp = (speed or {}).get("precisions", {})
    point = f"K={speed['samples']} x H={speed['horizon']}" if speed else "–"
    lines = ["## Speed and closed loop, side by side", "",
             f"Figure-eight, {loop['laps']:g} lap, lockstep quad SITL ({loop['flavour']}), paired seeds "
             f"{loop['seeds']} (same seed: same vehicle, wind and planner noise for every precision), planner "
             f"K={loop['planner']['samples']} x H={loop['planner']['horizon']}. Speed-up: planning step at {point}, "
             f"one thread. Gate: mean RMSE at most {max_ratio:.2f}x fp32's.", "",
             f"| precision | speed-up vs fp32 at {point} (wall / CPU) | flights | landed | mean RMSE m | "
             "median RMSE m | mean vs fp32 (90% CI over seeds) | median vs fp32 | closed-loop gate |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    ref_median = cl.get("fp32", {}).get("rmse_median_m", float("nan"))
    for n, s in cl.items():
        sv = sp.get(n)
        speed_cell = f"{sv['speedup']:.2f}x / {sv['cpu_speedup']:.2f}x" if sv else "–"
        if n == "fp32":
            verdict = "reference"
        elif n == noise:
            verdict = f"fp32, planner noise seed moved: the figure's own noise ({s['ratio_to_fp32']:.2f}x)"
        elif n in gate.get("refused", {}):
            verdict = "REFUSED"
        else:
            verdict = "passed" if s["within"] else "NOT within"
        low, high = s.get("ratio_ci90", (float("nan"), float("nan")))
        ci = f" ({_fmt(low, 2)}-{_fmt(high, 2)})" if n != "fp32" and math.isfinite(low) else ""
        med_ratio = s["rmse_median_m"] / ref_median if ref_median and math.isfinite(ref_median) else float("nan")
        lines.append(f"| {n} | {speed_cell} | {s['flights']} | {s['succeeded']} | {_fmt(s['rmse_mean_m'])} | "
                     f"{_fmt(s['rmse_median_m'])} | {_fmt(s['ratio_to_fp32'], 2)}x{ci} | {_fmt(med_ratio, 2)}x | "
                     f"{verdict} |")
    lines.append("")
    if gate:
        if gate.get("refused"):
            lines += [f"- `{n}` refused: {why}" for n, why in gate["refused"].items()]
        kept = gate.get("chosen")
        lines += [f"- calibrated bundle: **{kept}**" + (f" (was {gate['chosen_before']} before the flights)"
                                                         if gate.get("chosen_before") != kept else ""), ""]
    names = list(cl)
    seeds = sorted({int(k) for s in cl.values() for k in s["rmse_per_seed_m"]})
    if seeds:
        lines += ["Per-seed tracking RMSE (m):", "", "| seed | " + " | ".join(names) + " |",
                  "| --- |" + " --- |" * len(names)]
        lines += [f"| {seed} | " + " | ".join(_fmt(cl[n]["rmse_per_seed_m"].get(str(seed))) for n in names) + " |"
                  for seed in seeds]
        lines.append("")
    return lines
