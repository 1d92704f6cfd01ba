"""Report writers: PNG plots and the flight summary, for people (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dreamlink.calibration.kstep import KStepCurve
from dreamlink.spec import VehicleSpec, cartpole_balanced


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_ticks(path: Path) -> dict[str, Any]:
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data["spec"] = VehicleSpec.from_dict(json.loads(str(data["spec"])))
    return data


def longest_streak(mask: np.ndarray) -> int:
    best = run = 0
    for m in mask:
        run = run + 1 if m else 0
        best = max(best, run)
    return best


def cartpole_summary(ticks: dict[str, Any]) -> dict[str, Any]:
    up = cartpole_balanced(ticks["state"])
    return {
        "ticks": len(up),
        "ticks_balanced": int(up.sum()),
        "longest_balanced_streak": longest_streak(up),
        "max_abs_angle_deg": float(np.degrees(np.abs(ticks["state"][:, 2]).max())) if len(up) else float("nan"),
        "max_abs_cart_pos_m": float(np.abs(ticks["state"][:, 0]).max()) if len(up) else float("nan"),
    }


def plot_kstep(curves: dict[str, KStepCurve], path: Path, tolerance: float | None = None) -> Path:
    """Error vs horizon: the normalised curve per model/precision, and per component for the first."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, c in curves.items():
        axes[0].plot(c.k, c.normalised_rmse, marker=".", label=label)
    if tolerance is not None:
        axes[0].axhline(tolerance, color="grey", ls="--", lw=1, label=f"tolerance {tolerance:g}")
    axes[0].set_xlabel("k (control periods imagined ahead)")
    axes[0].set_ylabel("RMSE / data std (RMS over components)")
    axes[0].set_title("Compounding prediction error")
    axes[0].legend()
    first = next(iter(curves.values()))
    for i, name in enumerate(first.state_names):
        axes[1].semilogy(first.k, first.rmse[:, i] / first.scale[i], label=name)
    axes[1].set_xlabel("k")
    axes[1].set_ylabel("RMSE / data std")
    axes[1].set_title("Per component")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_kstep_metres(curves: dict[str, KStepCurve], path: Path, title: str, period_s: float = 0.02) -> Path:
    """A multirotor's k-step error in its own units: position (m) and velocity (m/s) error norms vs the time
    imagined ahead, one line per model (sim-only against fine-tuned: the sim-to-real gap)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, group, unit in ((axes[0], "pos_{}_m", "m"), (axes[1], "vel_{}_mps", "m/s")):
        for label, c in curves.items():
            idx = [c.state_names.index(group.format(a)) for a in "ned"]
            ax.plot(c.k * period_s, np.sqrt(np.sum(c.rmse[:, idx] ** 2, axis=1)), marker=".", ms=3, label=label)
        ax.set_xlabel("time imagined ahead (s)")
        ax.set_ylabel(f"{'position' if unit == 'm' else 'velocity'} error RMS ({unit})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_imagined_vs_actual(ticks: dict[str, Any], path: Path, every: int = 50, max_ticks: int = 500) -> Path:
    """Actual state over time, with the imagined trajectory of every `every`-th tick drawn from it."""
    plt = _pyplot()
    spec: VehicleSpec = ticks["spec"]
    t = ticks["t_s"][:max_ticks] - ticks["t_s"][0]
    state, imagined = ticks["state"][:max_ticks], ticks["imagined"][:max_ticks]
    action = ticks["action"][:max_ticks]
    period = spec.control_period_s
    n = spec.state_dim
    fig, axes = plt.subplots(n + 1, 1, figsize=(11, 2.2 * (n + 1)), sharex=True)
    for i, name in enumerate(spec.state_names):
        ax = axes[i]
        ax.plot(t, state[:, i], color="black", lw=1.2, label="actual")
        for j in range(0, len(t), every):
            if np.all(np.isfinite(imagined[j])):
                th = t[j] + period * np.arange(imagined.shape[1])
                ax.plot(
                    th,
                    imagined[j][:, i],
                    color="tab:orange",
                    lw=1,
                    alpha=0.8,
                    label=f"imagined (every {every} ticks)" if j == 0 else None,
                )
        ax.set_ylabel(name)
        if i == 0:
            ax.legend(loc="upper right", fontsize=8)
    axes[n].step(t, action[:, 0], where="post", color="tab:blue", lw=1)
    axes[n].set_ylabel(spec.action_names[0])
    axes[n].set_xlabel("time (s)")
    fig.suptitle("Imagined vs actual trajectories")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_quad_path(ticks: dict[str, Any], mission: dict[str, Any], path: Path, rollouts: int = 6,
                   title: str = "") -> Path:
    """The flown 3-D path against the figure-eight, with the imagined rollouts of `rollouts` evenly spread
    ticks drawn from where the vehicle was (NED plotted as north, east, up so the picture is upright)."""
    from dreamlink.runtime.mission import Figure8

    plt = _pyplot()
    spec: VehicleSpec = ticks["spec"]
    idx = [spec.state_index(f"pos_{a}_m") for a in ("n", "e", "d")]
    figure8 = Figure8(tuple(mission["centre_ned_m"]), mission["half_width_m"], mission["speed_mps"], mission["ramp_s"])
    t = ticks["t_s"] - mission["start_s"]
    ref, _ = figure8.position_velocity(t)
    pos = ticks["state"][:, idx]
    imagined = ticks["imagined"][:, :, idx]
    fig = plt.figure(figsize=(9, 7))
    ax = fig.add_subplot(projection="3d")
    ax.plot(ref[:, 0], ref[:, 1], -ref[:, 2], color="tab:gray", lw=1.5, ls="--", label="reference")
    ax.plot(pos[:, 0], pos[:, 1], -pos[:, 2], color="black", lw=1.2, label="flown")
    finite = [i for i in range(len(t)) if np.all(np.isfinite(imagined[i]))]
    for n, i in enumerate(finite[:: max(1, len(finite) // max(rollouts, 1))][:rollouts]):
        im = imagined[i]
        ax.plot(im[:, 0], im[:, 1], -im[:, 2], color="tab:orange", lw=2, alpha=0.9,
                label=f"imagined rollout ({im.shape[0] - 1} steps)" if n == 0 else None)
        ax.scatter([pos[i, 0]], [pos[i, 1]], [-pos[i, 2]], color="tab:orange", s=12)
    up_m = -pos[:, 2]
    mid_m, half_m = float(np.median(up_m)), max(2.0, float(np.ptp(up_m)) / 2 + 0.5)
    ax.set_zlim(mid_m - half_m, mid_m + half_m)  # altitude wobble at its true scale, not magnified
    ax.set_xlabel("north (m)")
    ax.set_ylabel("east (m)")
    ax.set_zlabel("up (m)")
    summary = quad_summary(ticks, mission)
    ax.set_title(title or f"tracking RMSE {summary['tracking_rmse_m']:.2f} m, "
                          f"max deviation {summary['max_deviation_m']:.2f} m")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def quad_summary(ticks: dict[str, Any], mission: dict[str, Any]) -> dict[str, Any]:
    """Tracking RMSE and max deviation against the figure-eight, and how close the fence came."""
    from dreamlink.runtime.mission import Figure8

    spec: VehicleSpec = ticks["spec"]
    pos_idx = [spec.state_index(f"pos_{a}_m") for a in ("n", "e", "d")]
    path = Figure8(tuple(mission["centre_ned_m"]), mission["half_width_m"], mission["speed_mps"], mission["ramp_s"])
    ref, _ = path.position_velocity(ticks["t_s"] - mission["start_s"])
    pos = ticks["state"][:, pos_idx]
    err = np.linalg.norm(pos - ref, axis=1)
    lo, hi = np.asarray(mission["fence_min_ned_m"]), np.asarray(mission["fence_max_ned_m"])
    margin = np.minimum(pos - lo, hi - pos).min(axis=1)
    return {
        "ticks": len(err),
        "tracking_rmse_m": float(np.sqrt(np.mean(err**2))) if len(err) else float("nan"),
        "max_deviation_m": float(err.max()) if len(err) else float("nan"),
        "min_fence_margin_m": float(margin.min()) if len(margin) else float("nan"),
        "fence_breaches": int((margin < 0).sum()),
        "landed_disarmed": mission.get("landed_disarmed"),
    }


def plot_mission(ticks: dict[str, Any], mission: dict[str, Any], path: Path) -> Path:
    """A planned mission seen from above and from the side: the planned path (with its detours), the keep-out
    zones, the flown path, and each waypoint with its miss distance and flown arrival (mission time)."""
    plt = _pyplot()
    spec: VehicleSpec = ticks["spec"]
    idx = [spec.state_index(f"pos_{a}_m") for a in ("n", "e", "d")]
    pos = ticks["state"][:, idx]
    planned = np.asarray(mission["path_ned_m"])
    waypoints = np.asarray(mission["waypoints_ned_m"])
    report = mission.get("mission", {})
    fig, (top, side) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [1.3, 1]})
    for k, zone in enumerate(mission.get("keep_out_ne_m", [])):
        ring = np.vstack([zone, zone[:1]])
        top.fill(ring[:, 1], ring[:, 0], color="tab:red", alpha=0.25, label="keep-out zone" if k == 0 else None)
    top.plot(planned[:, 1], planned[:, 0], color="tab:gray", ls="--", lw=1.5, label="planned path")
    top.plot(pos[:, 1], pos[:, 0], color="black", lw=1.0, label="flown")
    top.scatter(waypoints[:, 1], waypoints[:, 0], color="tab:blue", zorder=3, s=25, label="waypoints")
    for w, (n, e, _) in zip(report.get("waypoints", []), waypoints, strict=False):
        if w.get("miss_m") is not None:
            arrived = f", {w['arrived_s']:.0f} s" if w.get("arrived_s") is not None else ""
            top.annotate(f"{w['seq']}: {w['miss_m']:.2f} m{arrived}", (e, n), textcoords="offset points",
                         xytext=(5, 5), fontsize=8)
    top.set_xlabel("east (m)")
    top.set_ylabel("north (m)")
    top.set_aspect("equal")
    top.legend(loc="best", fontsize=8)
    top.set_title(f"{report.get('source', 'mission')}: {report.get('within_acceptance', '?')} of "
                  f"{len(report.get('waypoints', []))} waypoints within their radius, worst miss "
                  f"{report.get('max_miss_m', float('nan')):.2f} m", fontsize=9)
    t = ticks["t_s"] - mission["start_s"]
    side.plot(t, -pos[:, 2], color="black", lw=1.0, label="flown altitude")
    planned_t = [w["planned_s"] for w in report.get("waypoints", [])]
    if planned_t:
        side.scatter(planned_t, -waypoints[: len(planned_t), 2], color="tab:blue", s=20, label="waypoints (planned)")
    side.set_xlabel("time since mission start (s)")
    side.set_ylabel("up (m)")
    side.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
