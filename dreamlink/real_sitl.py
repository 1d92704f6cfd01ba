"""dreamlink against the real autopilot firmware in SITL: learn the vehicle, then fly it side by side with the
sim-only bundle and the autopilot's own position control.

dreamlink does not build or ship ArduPilot or PX4. Point it at an installed SITL with a command in an environment
variable (or flag) that starts the autopilot sending MAVLink to udp 127.0.0.1 on the port `{port}` (substituted):

    DREAMLINK_ARDUPILOT_SITL='/opt/ardupilot/build/sitl/bin/arducopter --model + --speedup 1 \
        --defaults /opt/ardupilot/Tools/autotest/default_params/copter.parm -I0 --serial0 udpclient:127.0.0.1:{port}'
    DREAMLINK_PX4_SITL='/opt/px4-sih.sh {port}'      # PX4 SIH (airframe 10040), its onboard link sending to {port}
    make real-sitl                                   # = python -m dreamlink.real_sitl --sim runs/demo-quad

Per autopilot whose variable is set: `dreamlink learn` on one boot of the SITL (a bounded excitation flight, then
rounds of fine-tune and fly), then for each planner-noise seed, on a fresh boot (a charged battery; see `Vehicle`),
the figure-eight flown by the sim-only bundle, the fine-tuned bundle and the autopilot's own position control
(`--baseline`); the table goes to OUT/real-sitl.md. With `--mavproxy`, MAVProxy (PyPI, at its
defaults) sits between the SITL and dreamlink, as on many companion computers. Without any variable set it says
so and exits 0: the test suite never needs the firmware.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

ENV = {"ardupilot": "DREAMLINK_ARDUPILOT_SITL", "px4": "DREAMLINK_PX4_SITL"}
DEFAULT_PORT = {"ardupilot": 14550, "px4": 14540}


class ExternalProcess:
    """A program started from a command line in its own session, its output in a file, killed with its whole
    process group on exit (a SITL launcher script starts children)."""

    def __init__(self, argv: list[str], log_path: Path, cwd: Path | None = None) -> None:
        self.argv, self.log_path, self.cwd = argv, log_path, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ExternalProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.cwd, start_new_session=True)
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.argv[0]} exited {self.proc.returncode} at once; its output "
                               f"({self.log_path}):\n{self.log_path.read_text(errors='replace')[-2000:]}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def _fly(bundle: Path, connect: str, autopilot: str, out: Path, seed: int, laps: float, baseline: bool
         ) -> dict[str, Any]:
    """One figure-eight by `dreamlink run` in its own process; its tracking figures."""
    from dreamlink.reports import load_ticks, plot_quad_path, quad_summary

    if out.exists():
        shutil.rmtree(out)  # one folder, one flight
    cmd = [sys.executable, "-m", "dreamlink.cli", "run", "--bundle", str(bundle), "--connect", connect,
           "--autopilot", autopilot, "--laps", str(laps), "--seed", str(seed), "--out", str(out),
           "--connect-timeout", "60"] + (["--baseline"] if baseline else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    (out / "run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-400:], "landed_disarmed": False}
    summary = json.loads((out / "summary.json").read_text())
    ticks = load_ticks(out / "ticks.npz")
    q = quad_summary(ticks, summary["mission"])
    plot_quad_path(ticks, summary["mission"], out / "path3d.png",
                   title=f"{autopilot} {'baseline' if baseline else bundle.name}: RMSE {q['tracking_rmse_m']:.2f} m")
    st = summary["stats"]
    return {"tracking_rmse_m": q["tracking_rmse_m"], "max_deviation_m": q["max_deviation_m"],
            "fence_breaches": q["fence_breaches"], "landed_disarmed": q["landed_disarmed"], "ticks": st["ticks"],
            "stale_ticks": st["stale_ticks"], "overruns": st["overruns"], "plan_p99_ms": st["plan_latency_p99_ms"],
            "reasserts": summary["mission"].get("telemetry", {}).get("streams", {}).get(
                "LOCAL_POSITION_NED", {}).get("reasserts")}


class Vehicle:
    """One boot of the SITL (and MAVProxy in front of it, if asked): a charged battery. ArduPilot's simulated
    battery runs down over a boot (51 % after a 3-minute excitation flight, 0 % after ten more flights), and the
    planner's tracking degraded with it on one boot (0.26 m on the 5th flight, 0.87-1.20 m from the 8th on,
    where the same bundle flew 0.14-0.15 m on a fresh boot), so each seed's flights get a fresh one."""

    def __init__(self, command: str, port: int, mavproxy: bool, out: Path, name: str) -> None:
        from dreamlink.sim.launcher import free_udp_port

        self.sitl_argv = shlex.split(command.replace("{port}", str(port)))
        self.port, self.out, self.name = port, out, name
        self.client = free_udp_port() if mavproxy else port
        self.mavproxy = mavproxy
        self._stack: list[ExternalProcess] = []

    @property
    def connect(self) -> str:
        return f"udp:127.0.0.1:{self.client}"

    def __enter__(self) -> Vehicle:
        sitl = ExternalProcess(self.sitl_argv, self.out / f"sitl-{self.name}.log", cwd=self.out)
        self._stack.append(sitl.__enter__())
        if self.mavproxy:
            self._stack.append(ExternalProcess(
                [str(Path(sys.executable).with_name("mavproxy.py")), f"--master=udpin:127.0.0.1:{self.port}",
                 f"--out=udpout:127.0.0.1:{self.client}", "--daemon", "--non-interactive",
                 f"--state-basedir={self.out}"], self.out / f"mavproxy-{self.name}.log", cwd=self.out).__enter__())
        return self

    def __exit__(self, *exc: object) -> None:
        while self._stack:
            self._stack.pop().__exit__(None, None, None)
        time.sleep(1.0)  # the SITL's sockets are released before the next boot binds them


def run_autopilot(autopilot: str, command: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from dreamlink.learn import LearnConfig, learn, progress_bar

    out = args.out / (autopilot + ("-mavproxy" if args.mavproxy else ""))
    out.mkdir(parents=True, exist_ok=True)
    port = args.port or DEFAULT_PORT[autopilot]
    rows: list[dict[str, Any]] = []
    sim_bundle = args.sim / f"{autopilot}-bundle"
    tuned = Path(args.reuse_bundle) if args.reuse_bundle else None
    if tuned is None:
        with Vehicle(command, port, args.mavproxy, out, "learn") as vehicle:
            learned = learn(LearnConfig(vehicle.connect, autopilot, args.sim / f"{autopilot}-world-model.pt",
                                        out / "learn", args.rounds, args.collect_minutes,
                                        tuple(Path(p) for p in args.data if autopilot in Path(p).name),
                                        epochs=args.epochs, laps=args.laps),
                            progress_bar, lambda t: print(f"   {t}", flush=True))
        tuned = Path(learned[-1]["bundle"])
        rows += [{"autopilot": autopilot, "control": f"learn round {r['round']}", "seed": 0, **r} for r in learned]
    for seed in range(args.seeds):
        with Vehicle(command, port, args.mavproxy, out, f"seed{seed}") as vehicle:
            for control, bundle, baseline in (("sim-only", sim_bundle, False), ("fine-tuned", tuned, False),
                                              ("baseline", sim_bundle, True)):
                if control not in args.controls:
                    continue
                where = out / f"{control}-seed{seed}"
                print(f"   {autopilot} {control} seed {seed}", flush=True)
                r = _fly(bundle, vehicle.connect, autopilot, where, seed, args.laps, baseline)
                rows.append({"autopilot": autopilot, "control": control, "seed": seed, **r})
                print(f"     -> {json.dumps({k: v for k, v in r.items() if k != 'error'}, default=str)}"
                      + (f" ERROR {r['error']}" if "error" in r else ""), flush=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| autopilot | control | flights | landed | mean RMSE (m) | per seed (m) | worst max deviation (m) "
             "| fence breaches | stale ticks |", "| --- " * 9 + "|"]
    for autopilot in dict.fromkeys(r["autopilot"] for r in rows):
        for control in ("sim-only", "fine-tuned", "baseline"):
            sel = [r for r in rows if r["autopilot"] == autopilot and r["control"] == control]
            if not sel:
                continue
            rmse = [r.get("tracking_rmse_m") for r in sel]
            flown = [v for v in rmse if v is not None]
            dev = [r["max_deviation_m"] for r in sel if r.get("max_deviation_m") is not None]
            lines.append(f"| {autopilot} | {control} | {len(sel)} | {sum(bool(r['landed_disarmed']) for r in sel)} | "
                         f"{np.mean(flown):.3f} | " + ", ".join("-" if v is None else f"{v:.2f}" for v in rmse)
                         + f" | {max(dev) if dev else float('nan'):.2f} | "
                         f"{sum(r.get('fence_breaches') or 0 for r in sel)} | "
                         f"{sum(r.get('stale_ticks') or 0 for r in sel)}/{sum(r.get('ticks') or 0 for r in sel)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dreamlink.real_sitl", description=__doc__.splitlines()[0])
    p.add_argument("--sim", type=Path, default=Path("runs/demo-quad"),
                   help="where `dreamlink demo quad` left FLAVOUR-bundle and FLAVOUR-world-model.pt")
    p.add_argument("--out", type=Path, default=Path("runs/real-sitl"))
    p.add_argument("--autopilot", choices=sorted(ENV), action="append", help="only this one (default: each set)")
    p.add_argument("--ardupilot-sitl", default=os.environ.get(ENV["ardupilot"], ""))
    p.add_argument("--px4-sitl", default=os.environ.get(ENV["px4"], ""))
    p.add_argument("--port", type=int, default=0, help="the UDP port the SITL sends to (default 14550 / 14540)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--controls", nargs="+", default=["sim-only", "fine-tuned", "baseline"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--collect-minutes", type=float, default=3.0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--laps", type=float, default=1.5)
    p.add_argument("--mavproxy", action="store_true", help="put MAVProxy (at its defaults) between SITL and dreamlink")
    p.add_argument("--reuse-bundle", default="", help="fly this fine-tuned bundle instead of learning one")
    p.add_argument("--data", nargs="*", default=[],
                   help="flight logs of these vehicles already collected (.tlog; a log is used for the autopilot "
                        "whose name is in its file name); with --collect-minutes 0 no new excitation is flown")
    args = p.parse_args(argv)
    commands = {"ardupilot": args.ardupilot_sitl, "px4": args.px4_sitl}
    wanted = args.autopilot or [a for a, c in commands.items() if c]
    if not any(commands[a] for a in wanted):
        print(f"real-sitl: no autopilot SITL given: set {' or '.join(ENV.values())} to a command that starts it "
              f"(see `python -m dreamlink.real_sitl --help`); nothing flown")
        return 0
    rows: list[dict[str, Any]] = []
    for autopilot in wanted:
        if not commands[autopilot]:
            print(f"real-sitl: {ENV[autopilot]} is not set: {autopilot} skipped")
            continue
        rows += run_autopilot(autopilot, commands[autopilot], args)
    text = table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real-sitl.md").write_text(text)
    print(text)
    return 0 if all(r.get("landed_disarmed") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
