"""dreamlink's quad SITL against the real autopilots on the same excitation: is its guided/offboard velocity response
the real one?

Each real SITL log in ../shared/data/sitl-logs (ArduCopter 4.8, PX4 1.16 SIH, stock parameters, no wind) holds
146 s of velocity setpoints and the vehicle's answer. The same setpoint sequence, step for step at 50 Hz, is flown
by dreamlink's SITL of that flavour (lockstep, nominal airframe, no wind, no noise, the autopilot's stock shaping
parameters, as in the log). Printed per autopilot, real beside dreamlink's: how fast the vehicle flew for what it
was asked (mean and 95th percentile horizontal speed, share of samples above 2 m/s), how hard it turned (95th
percentile tilt and body rate), the lag from command to response (cross-correlation of commanded and flown
north velocity), and the RMS difference between the two velocity traces. Not a test: about 5 minutes.

    python bench/sim_vs_real.py [--out runs/sim-vs-real]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from dreamlink.calibration.reference_logs import FLIGHT_LOGS, require_sitl_logs
from dreamlink.calibration.tlog_data import tlog_to_transitions
from dreamlink.firmware_bridge.link import Link, LinkConfig
from dreamlink.firmware_bridge.profiles import make_profile
from dreamlink.sim.launcher import SitlProcess
from dreamlink.spec import QUAD

VEL = [QUAD.state_index(n) for n in ("vel_n_mps", "vel_e_mps", "vel_d_mps")]
TILT = [QUAD.state_index(n) for n in ("roll_rad", "pitch_rad")]
RATES = [QUAD.state_index(n) for n in ("roll_rate_radps", "pitch_rate_radps")]


def replay(flavour: str, actions: np.ndarray, altitude_m: float, extra: tuple[str, ...] = ()) -> np.ndarray:
    """dreamlink's SITL flown through the same setpoints (one per 20 ms step); the states [T+1,S] it went through."""
    with SitlProcess("quad", lockstep=True, seed=0, extra_args=("--flavour", flavour, "--nominal", *extra)) as sitl, \
            Link(LinkConfig(sitl.connect_string)) as link:
        profile = make_profile(QUAD, link, flavour, lockstep=True)
        profile.GUIDED_TUNING = {}  # the real logs flew ArduPilot's stock WP_ACC / PSC_JERK_NE
        profile.connect(timeout_s=30)
        profile.enter_control_mode()
        profile.arm()
        profile.takeoff(altitude_m)
        t_s, x, _ = profile.state()
        out = [x]
        for a in actions:
            profile.send(a)
            if not profile.wait_state_after(t_s + QUAD.control_period_s * 0.5, 5.0):
                raise TimeoutError("replay: the SITL stopped answering")
            t_s, x, _ = profile.state()
            out.append(x)
        profile.land()
    return np.stack(out)


def lag_s(command: np.ndarray, response: np.ndarray, max_lag: int = 100) -> float:
    """The shift (s) that best lines the response up with the command (cross-correlation peak)."""
    c, r = command - command.mean(), response - response.mean()
    scores = [float(np.dot(c[: len(c) - k], r[k:])) for k in range(max_lag)]
    return int(np.argmax(scores)) * QUAD.control_period_s


def figures(states: np.ndarray, actions: np.ndarray) -> dict[str, float]:
    v = states[1:, VEL]
    speed = np.hypot(v[:, 0], v[:, 1])
    tilt = np.degrees(np.max(np.abs(states[1:, TILT]), axis=1))
    rate = np.degrees(np.max(np.abs(states[1:, RATES]), axis=1))
    return {"mean_speed_mps": float(speed.mean()), "p95_speed_mps": float(np.percentile(speed, 95)),
            "share_over_2mps": float(np.mean(speed > 2.0)), "p95_tilt_deg": float(np.percentile(tilt, 95)),
            "p95_rate_degps": float(np.percentile(rate, 95)), "lag_n_s": lag_s(actions[:, 0], v[:, 0])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/sim-vs-real"))
    p.add_argument("--px4-args", default="", help="extra dreamlink SITL arguments for the PX4 flavour")
    args = p.parse_args()
    try:
        logs = require_sitl_logs(FLIGHT_LOGS.values(), Path(__file__))
    except FileNotFoundError as e:
        raise SystemExit(f"{Path(__file__).name}: {e}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    lines = ["| autopilot | source | mean / p95 speed (m/s) | > 2 m/s | p95 tilt | p95 body rate | lag (north) "
             "| velocity RMS difference to the real one (m/s) |", "| --- " * 8 + "|"]
    for flavour, name in FLIGHT_LOGS.items():
        real = tlog_to_transitions(logs / name, QUAD, flavour)
        (states, actions), = real.episodes()[:1]
        altitude = float(-(states[0, QUAD.state_index("pos_d_m")] - 0.0))
        sim = replay(flavour, actions, max(2.0, altitude), tuple(args.px4_args.split()) if flavour == "px4" else ())
        n = min(len(sim), len(states))
        diff = sim[:n, VEL] - states[:n, VEL]
        rms = np.sqrt(np.mean(diff**2, axis=0))
        report[flavour] = {"real": figures(states, actions), "dreamlink": figures(sim[: len(actions) + 1], actions),
                           "velocity_rms_difference_mps": rms.tolist()}
        for source in ("real", "dreamlink"):
            f = report[flavour][source]
            lines.append(f"| {flavour} | {source} | {f['mean_speed_mps']:.2f} / {f['p95_speed_mps']:.2f} | "
                         f"{100 * f['share_over_2mps']:.1f} % | {f['p95_tilt_deg']:.1f}° | "
                         f"{f['p95_rate_degps']:.0f}°/s | "
                         f"{f['lag_n_s']:.2f} s | " + ("-" if source == "real" else
                                                      " / ".join(f"{x:.2f}" for x in rms) + " (N/E/D)") + " |")
        print("\n".join(lines[-2:]), flush=True)
    (args.out / "sim_vs_real.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "sim_vs_real.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(math.isfinite(r["velocity_rms_difference_mps"][0]) for r in report.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
