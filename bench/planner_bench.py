"""`make bench`: dreamlink's fused planner against the planners a user would otherwise pick.

    .venv/bin/python bench/planner_bench.py [--quick] [--out runs/bench]

For K x H in {256x15, 512x15, 1024x20}, hidden 128 and 256 (2 hidden layers, ensemble of 5, ReLU:
dreamlink's default model; `--activation` and `--layers` change it), 1 and 2 threads, it times one planning step of
  (a) pytorch-mppi 0.9.1 on the same torch model (torch.inference_mode),
  (b) the same MPPI update as plain torch eager code, batched over K,
  (c) dreamlink's fused planner graph, fp32, loaded from a bundle (FusedPlanner),
  (d) the same, composed around the int8 (dynamically quantized) world model,
round-robin one step each, so drift and noise from the machine fall on all four alike; then
reports median, p99, speed-up over (a), matmul FLOPs per step and the share of this machine's
single-core fp32 matmul peak (measured here, see machine.py). Then: rollout variants of the
fused graph, int8 plan error, loop lateness at 50/100/200 Hz with the planner inside, and RSS and
start-to-first-command time of an onboard process against a torch-based one.

Writes `<out>/planner_bench.md` and `<out>/planner_bench.json` (and timestamped copies), and
prints the markdown. `--quick` is a smoke run (< 2 min) of the same code on a small matrix.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import machine  # noqa: E402
import models  # noqa: E402
import peers  # noqa: E402

from dreamlink.bundle import Bundle  # noqa: E402
from dreamlink.learning import ACTIVATIONS  # noqa: E402
from dreamlink.learning.train import save_checkpoint  # noqa: E402
from dreamlink.runtime.clock import MonotonicClock  # noqa: E402
from dreamlink.runtime.fused import FusedPlanner  # noqa: E402
from dreamlink.runtime.loop import ControlLoop, LoopConfig  # noqa: E402
from dreamlink.runtime.mppi import MppiConfig, MppiPlanner, shift_plan  # noqa: E402
from dreamlink.runtime.session import ModelSession, SessionConfig  # noqa: E402
from dreamlink.runtime.shield import ShieldLimits  # noqa: E402
from dreamlink.runtime.tasks import cartpole_balance  # noqa: E402

log = logging.getLogger("bench")

NOISE_SIGMA, TEMPERATURE = 0.3, 1.0
TARGET_POINT = (512, 15, 256, 1)  # K, H, hidden, threads: where the performance targets are read
SET_ACTUATOR = 139  # MAVLink SET_ACTUATOR_CONTROL_TARGET, what the motor-board profile sends


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)  # wall clock
    cpu_seconds: list[float] = field(default_factory=list)  # the calling thread's CPU time

    def summary(self, flops: int, peak_gflops: float) -> dict[str, float]:
        ms, cpu = np.array(self.seconds) * 1e3, np.array(self.cpu_seconds) * 1e3
        med = float(np.median(ms))
        return {
            "median_ms": med, "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
            "mean_ms": float(ms.mean()), "p99_over_median": float(np.percentile(ms, 99) / med), "steps": len(ms),
            "gflops": flops / (med * 1e-3) / 1e9, "pct_peak": 100.0 * flops / (med * 1e-3) / 1e9 / peak_gflops,
            # With one thread all work runs on the calling thread, so CPU time excludes the time other
            # processes on this machine held the core: the planner's own tail.
            "cpu_median_ms": float(np.median(cpu)),
            "cpu_p99_over_median": float(np.percentile(cpu, 99) / np.median(cpu)),
            "preempted_steps": int(np.sum(ms - cpu > 1.0)),
        }


class FusedStepper:
    """A FusedPlanner driven like the loop drives it: warm start = the shifted previous plan."""

    def __init__(self, planner: FusedPlanner) -> None:
        self.planner = planner
        self.warm = planner.initial_plan()

    def step(self, state: np.ndarray) -> np.ndarray:
        plan = self.planner.plan(state, self.warm, 0.0)
        self.warm = shift_plan(plan.actions)
        return plan.actions[0]


def near_upright_states(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.array([0.2, 0.1, 0.05, 0.2], np.float32) * rng.uniform(-1, 1, (n, 4))).astype(np.float32)


GAP_S = 0.002  # idle time between two timed steps, as a control loop sleeps between ticks


def interleaved(steppers: dict[str, Callable[[np.ndarray], Any]], steps: int, warmup: int) -> dict[str, Timing]:
    """Time `steps` planning steps of each stepper, round-robin one step each, after `warmup` rounds.

    A short idle gap before each step lets the previous library's worker threads (OpenMP, ORT's
    pool) stop spinning, so no planner is timed while another's threads still hold a core.
    """
    states = near_upright_states(steps + warmup, seed=1)
    timings = {name: Timing(name) for name in steppers}
    for i in range(warmup + steps):
        for name, step in steppers.items():
            time.sleep(GAP_S)
            c0, t0 = time.thread_time(), time.perf_counter()
            step(states[i])
            dt, dc = time.perf_counter() - t0, time.thread_time() - c0
            if i >= warmup:
                timings[name].seconds.append(dt)
                timings[name].cpu_seconds.append(dc)
    return timings


def fused(bundle: Bundle, threads: int, seed: int = 0) -> FusedPlanner:
    session = replace(_bundle_session(bundle), intra_op_threads=threads)
    return FusedPlanner.from_bundle(bundle, cartpole_balance(bundle.spec), np.random.default_rng(seed),
                                    session=session)


def _bundle_session(bundle: Bundle) -> SessionConfig:
    """The session settings the bundle records, read as `dreamlink run` reads them (FusedPlanner.from_bundle)."""
    return SessionConfig.from_calibration(bundle.manifest.calibration.get("session", {}))


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def latency_matrix(args: argparse.Namespace, built: dict[int, models.BenchModel], work: Path,
                   peak: float) -> tuple[list[dict[str, Any]], dict[tuple[int, int, int, str], Bundle]]:
    rows: list[dict[str, Any]] = []
    bundles: dict[tuple[int, int, int, str], Bundle] = {}
    spec = models.SPEC
    task = cartpole_balance(spec)
    for hidden in args.hidden:
        model = built[hidden]
        for K, H in args.configs:
            for precision in ("fp32", "int8"):
                bundles[(hidden, K, H, precision)] = models.planner_bundle(
                    model, work, K, H, precision, NOISE_SIGMA, TEMPERATURE)
            flops = model.flops_per_step(K, H)
            cfg = MppiConfig(samples=K, horizon=H, noise_sigma=NOISE_SIGMA, temperature=TEMPERATURE)
            for threads in args.threads:
                torch.set_num_threads(threads)
                steppers: dict[str, Callable[[np.ndarray], Any]] = {
                    "pytorch-mppi": peers.PytorchMppiPlanner(model.torch_model, spec, task, cfg, seed=0).step,
                    "torch eager": peers.TorchEagerPlanner(model.torch_model, spec, task, cfg, seed=0).step,
                    "fused fp32": FusedStepper(fused(bundles[(hidden, K, H, "fp32")], threads)).step,
                    "fused int8": FusedStepper(fused(bundles[(hidden, K, H, "int8")], threads)).step,
                }
                t0 = time.perf_counter()
                timings = interleaved(steppers, args.steps, args.warmup)
                base = float(np.median(timings["pytorch-mppi"].seconds))
                for name, timing in timings.items():
                    s = timing.summary(flops, peak)
                    rows.append({"hidden": hidden, "K": K, "H": H, "threads": threads, "planner": name,
                                 "flops_per_step": flops, **s, "speedup_vs_pytorch_mppi": base * 1e3 / s["median_ms"]})
                log.info("h%d K%d H%d t%d: %s (%.0f s)", hidden, K, H, threads,
                         ", ".join(f"{r['planner']} {r['median_ms']:.1f} ms" for r in rows[-4:]),
                         time.perf_counter() - t0)
                del steppers
                gc.collect()
    torch.set_num_threads(1)
    return rows, bundles


def rollout_variants(args: argparse.Namespace, built: dict[int, models.BenchModel], work: Path,
                     peak: float) -> list[dict[str, Any]]:
    """The same fused MPPI graph built four ways, timed interleaved at the target point (K=512, H=15, hidden 256)."""
    K, H, hidden, threads = TARGET_POINT if not args.quick else (256, 15, args.hidden[0], 1)
    model = built.get(hidden) or built[args.hidden[0]]
    variants = {"unrolled, one chain": dict(rollout="unrolled", chunk=0),
                "unrolled, chunks of 128": dict(rollout="unrolled", chunk=128),
                "unrolled, chunks of 256": dict(rollout="unrolled", chunk=256),
                "ONNX Loop over H": dict(rollout="loop", chunk=0)}
    steppers = {}
    for name, kw in variants.items():
        bundle = models.planner_bundle(model, work, K, H, "fp32", NOISE_SIGMA, TEMPERATURE, **kw)
        steppers[name] = FusedStepper(fused(bundle, threads)).step
    timings = interleaved(steppers, max(args.steps // 2, 20), args.warmup)
    flops = model.flops_per_step(K, H)
    return [{"variant": name, "hidden": model.hidden, "K": K, "H": H, "threads": threads, **t.summary(flops, peak)}
            for name, t in timings.items()]


def accuracy(args: argparse.Namespace, built: dict[int, models.BenchModel],
             bundles: dict[tuple[int, int, int, str], Bundle]) -> list[dict[str, Any]]:
    """int8 vs fp32 fused plans on the same noise, and fp32 fused vs the numpy reference planner."""
    rows = []
    states = near_upright_states(args.accuracy_states, seed=2)
    for (hidden, K, H, precision), bundle in bundles.items():
        if precision != "fp32":
            continue
        fp32, int8 = fused(bundle, 1, seed=3), fused(bundles[(hidden, K, H, "int8")], 1, seed=3)
        ref = MppiPlanner(ModelSession(bundle.path_of("world_model"), bundle.spec), bundle.spec,
                          cartpole_balance(bundle.spec), fp32.config, np.random.default_rng(3))
        d_int8, d_ref, c_int8, c_med = [], [], [], []
        for state in states:
            warm = fp32.initial_plan()
            a, b, r = fp32.plan(state, warm, 0.0), int8.plan(state, warm, 0.0), ref.plan(state, warm, 0.0)
            d_int8.append(np.abs(a.actions - b.actions).max())
            d_ref.append(np.abs(a.actions - r.actions).max())
            diff, scale = np.abs(fp32.costs - int8.costs), float(np.median(np.abs(fp32.costs)))
            c_int8.append(diff.max() / scale)
            c_med.append(np.median(diff) / scale)
        half = float((bundle.spec.action_high - bundle.spec.action_low).max() / 2)
        rows.append({"hidden": hidden, "K": K, "H": H, "states": len(states),
                     "int8_plan_max_abs": float(np.max(d_int8)),
                     "int8_plan_pct_range": 100 * float(np.max(d_int8)) / half,
                     "int8_first_action_median_abs": float(np.median(d_int8)),
                     "int8_cost_max_rel": float(np.max(c_int8)), "int8_cost_median_rel": float(np.median(c_med)),
                     "fp32_vs_numpy_reference_max_abs": float(np.max(d_ref))})
    return rows


def anatomy(args: argparse.Namespace, bundles: dict[tuple[int, int, int, str], Bundle],
            peak: float, built: dict[int, models.BenchModel]) -> dict[str, Any]:
    """Where one fused fp32 step's time goes, by ONNX Runtime operator (its profiler, 1 thread).

    The profiler adds per-node overhead, so shares, not absolute times, are what to read; the matmul
    kernels' own rate is the step's matmul FLOPs over their share of the unprofiled median.
    """
    import onnxruntime as ort

    K, H, hidden, _ = TARGET_POINT
    key = (hidden, K, H, "fp32")
    if key not in bundles:
        key = next(k for k in bundles if k[3] == "fp32")
    hidden, K, H = key[0], key[1], key[2]
    bundle = bundles[key]
    planner = fused(bundle, 1)
    feeds = {name: arr for name, arr in planner._in.items()}  # the planner's own bound inputs
    feeds["noise"] = np.random.default_rng(0).standard_normal(feeds["noise"].shape, dtype=np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the file is pre-optimised
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.gettempdir()) / "dreamlink-bench-profile")
    sess = ort.InferenceSession(str(bundle.path_of("planner")), opts, providers=["CPUExecutionProvider"])
    runs = 5 if args.quick else 20
    for _ in range(3 + runs):
        sess.run(None, feeds)
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink(missing_ok=True)
    by_op: dict[str, float] = {}
    node_events = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    skip = len(node_events) * 3 // (3 + runs)  # drop the warm-up runs
    for e in node_events[skip:]:
        op = e["args"]["op_name"]
        by_op[op] = by_op.get(op, 0.0) + e["dur"]
    total = sum(by_op.values())
    timing = interleaved({"fused": FusedStepper(planner).step}, 30, 3)["fused"]
    median_s = float(np.median(timing.seconds))
    flops = built[hidden].flops_per_step(K, H)
    matmul_share = sum(v for k, v in by_op.items() if "MatMul" in k or k.endswith("Gemm")) / total  # FusedGemm: + ReLU
    return {
        "planner": f"K={K} H={H} hidden {hidden} fp32", "median_ms": median_s * 1e3,
        "shares": sorted(((k, v / total) for k, v in by_op.items()), key=lambda kv: -kv[1]),
        "matmul_share": matmul_share,
        "matmul_kernel_gflops": flops / (median_s * matmul_share) / 1e9,
        "matmul_kernel_pct_peak": 100 * flops / (median_s * matmul_share) / 1e9 / peak,
    }


class _StillProfile:
    """A vehicle that always reports a fresh near-upright state and swallows commands."""

    def __init__(self) -> None:
        self.x = np.array([0.0, 0.0, 0.02, 0.0], np.float32)
        self.sent = 0

    def state(self) -> tuple[float, np.ndarray, float]:
        return time.monotonic(), self.x, 0.0

    def send(self, action: np.ndarray) -> None:
        self.sent += 1


def lateness(args: argparse.Namespace, built: dict[int, models.BenchModel], work: Path,
             bundles: dict[tuple[int, int, int, str], Bundle]) -> list[dict[str, Any]]:
    """ControlLoop on MonotonicClock at each rate with a fused fp32 planner inside (1 thread).

    Per rate, the planner is the largest K (H=15, the smaller model) whose measured p99 fits 70% of
    the period, the rest left for the shield, the send and the recorder: how a user sizes a planner
    to a rate. At 50 Hz the target point (K=512, H=15, hidden 256) runs too, to show what a
    planner that does not fit does to the loop.
    """
    model = built[min(built)]
    H = 15
    sizes = (64, 128, 256) if args.quick else (64, 128, 256, 512, 1024)
    candidates = {K: models.planner_bundle(model, work, K, H, "fp32", NOISE_SIGMA, TEMPERATURE) for K in sizes}
    timings = interleaved({K: FusedStepper(fused(b, 1)).step for K, b in candidates.items()}, 40, 5)
    p99 = {K: float(np.percentile(t.seconds, 99)) * 1e3 for K, t in timings.items()}
    out = []
    for rate in args.rates:
        period_ms = 1e3 / rate
        fits = [K for K in sizes if p99[K] <= 0.7 * period_ms]
        runs = [("largest K whose p99 fits 70% of the period", candidates[max(fits)], max(fits), model.hidden)
                if fits else ("smallest K (none fits)", candidates[sizes[0]], sizes[0], model.hidden)]
        target = bundles.get((TARGET_POINT[2], TARGET_POINT[0], TARGET_POINT[1], "fp32"))
        if rate == min(args.rates) and target is not None:
            runs.append(("the target point", target, TARGET_POINT[0], TARGET_POINT[2]))
        for why, bundle, K, hidden in runs:
            planner = fused(bundle, 1)
            loop = ControlLoop(_StillProfile(), planner, ShieldLimits.from_spec(models.SPEC),  # type: ignore[arg-type]
                               MonotonicClock(), LoopConfig(rate_hz=rate))
            stats = loop.run(args.lateness_ticks)
            out.append({"rate_hz": rate, "planner": f"K={K} H={H} hidden {hidden}", "why": why,
                        **{k: v for k, v in stats.to_dict().items() if k != "fallbacks"},
                        "fallbacks": dict(stats.fallbacks)})
    return out


def processes(args: argparse.Namespace, built: dict[int, models.BenchModel],
              bundles: dict[tuple[int, int, int, str], Bundle], work: Path) -> list[dict[str, Any]]:
    """Spawn the onboard probe and the torch probe; time spawn -> first MAVLink command at our socket."""
    K, H, hidden, _ = TARGET_POINT
    if (hidden, K, H, "fp32") not in bundles:
        hidden, K, H = next((h, k, hh) for (h, k, hh, p) in bundles if p == "fp32")
    checkpoint = save_checkpoint(built[hidden].torch_model, work / f"h{hidden}.pt")
    runs = {
        "onboard (dreamlink fused fp32 bundle)": ["onboard", str(bundles[(hidden, K, H, "fp32")].root)],
        "onboard (dreamlink fused int8 bundle)": ["onboard", str(bundles[(hidden, K, H, "int8")].root)],
        "torch + pytorch-mppi": ["torch", str(checkpoint)],
    }
    out = []
    for name, argv in runs.items():
        results = []
        for _ in range(args.probe_runs):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
                extra = [str(K), str(H)] if argv[0] == "torch" else []
                env = {**os.environ, "PYTHONPATH": str(HERE)}
                t0 = time.monotonic()
                proc = subprocess.Popen([sys.executable, str(HERE / "probe.py"), argv[0], argv[1], str(port), *extra],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                sock.settimeout(0.5)
                while True:
                    try:
                        data = sock.recv(4096)
                    except TimeoutError:
                        if proc.poll() is not None or time.monotonic() - t0 > 120:
                            proc.kill()
                            why = proc.communicate()[1][-2000:]
                            raise RuntimeError(f"probe {name} sent no command: {why}") from None
                        continue
                    if len(data) > 9 and data[0] == 0xFD and int.from_bytes(data[7:10], "little") == SET_ACTUATOR:
                        break  # the first command
                first_s = time.monotonic() - t0
                stdout, stderr = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"probe {name} failed: {stderr[-2000:]}")
            results.append({"first_command_s": first_s, **json.loads(stdout.strip().splitlines()[-1])})
        out.append({
            "process": name, "K": K, "H": H, "hidden": hidden, "runs": len(results),
            "first_command_s_median": statistics.median(r["first_command_s"] for r in results),
            "first_command_s_max": max(r["first_command_s"] for r in results),
            "rss_mb_max": max(r["VmRSS"] for r in results) / 1024,
            "rss_anon_mb_max": max(r["RssAnon"] for r in results) / 1024,
            "rss_file_mb_max": max(r["RssFile"] for r in results) / 1024,
            "peak_rss_mb_max": max(r["VmHWM"] for r in results) / 1024,
            "import_s_median": statistics.median(r["import_s"] for r in results),
            "load_s_median": statistics.median(r["load_s"] for r in results),
            "plan_s_median": statistics.median(r["plan_s"] for r in results),
            "torch_imported": any(r["torch_imported"] for r in results),
        })
    return out


def rss_stages(bundle: Bundle) -> list[dict[str, Any]]:
    """The onboard start, step by step, with the RSS after each (one child process)."""
    proc = subprocess.run([sys.executable, str(HERE / "probe.py"), "stages", str(bundle.root)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(HERE)})
    if proc.returncode != 0:
        raise RuntimeError(f"probe stages failed: {proc.stderr[-2000:]}")
    stages: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])["stages"]
    return [{"stage": st["stage"], "rss_mb": st["VmRSS"] / 1024, "anon_mb": st["RssAnon"] / 1024,
             "file_mb": st["RssFile"] / 1024} for st in stages]


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(result: dict[str, Any]) -> list[list[Any]]:
    K, H, hidden, threads = TARGET_POINT
    at = {r["planner"]: r for r in result["latency"]
          if (r["K"], r["H"], r["hidden"], r["threads"]) == (K, H, hidden, threads)}
    checks: list[list[Any]] = []
    if at:
        f, a = at["fused fp32"], at["pytorch-mppi"]
        checks.append(["fused fp32 speed-up over pytorch-mppi", ">= 1.3x", f"{a['median_ms'] / f['median_ms']:.2f}x",
                       a["median_ms"] / f["median_ms"] >= 1.3])
        checks.append(["fused fp32 share of fp32 peak", ">= 85%", f"{f['pct_peak']:.1f}%", f["pct_peak"] >= 85])
        checks.append(["fused fp32 p99 / median", "<= 1.2", f"{f['p99_over_median']:.3f}", f["p99_over_median"] <= 1.2])
    for p in result.get("processes", []):
        if p["process"].startswith("onboard (dreamlink fused fp32"):
            # The peak (VmHWM), not the RSS at the end: memory the process needed once, it needs every start.
            checks.append(["onboard peak RSS (VmHWM)", "< 80 MB",
                           f"{p['peak_rss_mb_max']:.1f} MB (at the first command {p['rss_mb_max']:.1f})",
                           p["peak_rss_mb_max"] < 80])
            checks.append(["onboard start to first command", "<= 0.5 s", f"{p['first_command_s_median']:.3f} s",
                           p["first_command_s_median"] <= 0.5])
    return checks


def render(result: dict[str, Any]) -> str:
    m, peak = result["machine"], result["peak"]
    v = m["versions"]
    K, H, hidden, threads = TARGET_POINT
    parts = [
        "# dreamlink planner benchmark",
        "",
        f"Command: `{result['command']}` ({'quick' if result['quick'] else 'full'} run, {result['seconds']:.0f} s)",
        "",
        f"- Machine: {m['cpu']} ({m['arch']}), {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}",
        f"- CPU flags: {' '.join(m['flags'])}",
        f"- Versions: python {v['python']}, numpy {v['numpy']}, onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, "
        f"torch {v['torch']} ({m['torch_blas']}, {m['torch_cpu_capability']}), pytorch-mppi {v['pytorch_mppi']}, "
        f"pymavlink {v['pymavlink']}, dreamlink {v['dreamlink']} ({m['git']})",
        f"- Load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in result['loadavg_end'])}; {m['date_utc']}",
        f"- Model: cart-pole ensemble world model, {models.ENSEMBLE} members x "
        f"{result.get('layers', models.LAYERS)} hidden layers, {result.get('activation', models.ACTIVATION)}, "
        f"trained {result['train_epochs']} epochs on simulated cart-pole transitions; MPPI noise "
        f"{NOISE_SIGMA} of the half range, temperature {TEMPERATURE}; {result['steps']} timed steps per planner "
        f"after {result['warmup']} warm-up rounds, interleaved",
        "",
        "## Single-core fp32 matmul peak (measured)",
        "",
        _table(["library", "M x K x N", "GFLOP/s"], [[r["library"], r["shape"], r["gflops"]] for r in peak["rows"]]),
        "",
        f"Peak used below: **{peak['peak_gflops']:.1f} GFLOP/s** ({peak['peak_from']}, best of runs).",
        "",
        "## Planning step latency",
        "",
        "FLOPs = the world model's matmul FLOPs for K rows x H steps (elementwise work not counted). "
        "Speed-up = pytorch-mppi's median / this planner's median, same run, interleaved.",
        "",
        _table(["hidden", "K x H", "threads", "planner", "median ms", "p99 ms", "p99/median", "speed-up vs (a)",
                "GFLOP/step", "GFLOP/s", "% peak", "CPU-time p99/median", "steps preempted > 1 ms"],
               [[r["hidden"], f"{r['K']}x{r['H']}", r["threads"], r["planner"], r["median_ms"], r["p99_ms"],
                 r["p99_over_median"], r["speedup_vs_pytorch_mppi"], r["flops_per_step"] / 1e9, r["gflops"],
                 r["pct_peak"], r["cpu_p99_over_median"] if r["threads"] == 1 else "-",
                 r["preempted_steps"] if r["threads"] == 1 else "-"] for r in result["latency"]]),
        "",
        "CPU-time p99/median (1 thread only: all work on the calling thread) leaves out the time other "
        "processes held the core; a step counts as preempted when its wall time exceeds its CPU time by 1 ms.",
    ]
    if result.get("variants"):
        r0 = result["variants"][0]
        parts += ["", f"## Fused graph variants (fp32, hidden {r0['hidden']}, K={r0['K']}, H={r0['H']}, "
                  f"{r0['threads']} thread, interleaved)", "",
                  _table(["variant", "median ms", "p99 ms", "% peak"],
                         [[r["variant"], r["median_ms"], r["p99_ms"], r["pct_peak"]] for r in result["variants"]])]
    if result.get("anatomy"):
        an = result["anatomy"]
        top = [kv for kv in an["shares"] if kv[1] >= 0.005]
        parts += ["", f"## Where a fused step's time goes ({an['planner']}, 1 thread, ORT profiler)", "",
                  _table(["operator", "share of kernel time"], [[k, f"{100 * v:.1f}%"] for k, v in top]), "",
                  f"Matmul kernels: {100 * an['matmul_share']:.1f}% of the step; on their own they run at "
                  f"{an['matmul_kernel_gflops']:.1f} GFLOP/s = {an['matmul_kernel_pct_peak']:.1f}% of the peak. "
                  "(Gemm: the hidden and output layers with their biases fused in; MatMul: the first layer, "
                  "whose bias rides on a ones column; a ReLU rides in the Gemm as FusedGemm.) The rest (a SiLU as "
                  "ORT's fused QuickGelu, the ensemble mean, the cost, the copies between steps) is elementwise "
                  "work the FLOP count does not include, and it caps the whole step's share."]
    if result.get("accuracy"):
        parts += ["", "## Plan accuracy (same noise, from near-upright states; action range +/-10 N)", "",
                  _table(["hidden", "K x H", "states", "int8 vs fp32: max |plan diff| N", "% of half range",
                          "median N", "int8 cost err: median", "max", "fp32 fused vs numpy reference: max N"],
                         [[r["hidden"], f"{r['K']}x{r['H']}", r["states"], r["int8_plan_max_abs"],
                           r["int8_plan_pct_range"], r["int8_first_action_median_abs"], r["int8_cost_median_rel"],
                           r["int8_cost_max_rel"], r["fp32_vs_numpy_reference_max_abs"]] for r in result["accuracy"]]),
                  "", "Cost errors: |int8 - fp32| per sample over the median fp32 cost of that step, median and max "
                  "over all K samples of all states. A max near 200 / median cost is one wall penalty (200): a "
                  "sample whose imagined pole angle ends just past the 12 degree wall in one precision only."]
    if result.get("lateness"):
        parts += ["", "## Loop lateness with the planner inside (ControlLoop, MonotonicClock, fused fp32, 1 thread)",
                  "", _table(["rate Hz", "planner", "chosen as", "ticks", "plan p50 ms", "plan p99 ms",
                              "lateness p50 ms", "p99 ms", "max ms", "overruns", "missed deadlines", "fallbacks"],
                             [[r["rate_hz"], r["planner"], r["why"], r["ticks"], r["plan_latency_p50_ms"],
                               r["plan_latency_p99_ms"], r["lateness_p50_ms"], r["lateness_p99_ms"],
                               r["lateness_max_ms"], r["overruns"], r["missed_deadlines"],
                               ", ".join(f"{k} {v}" for k, v in r["fallbacks"].items()) or "-"]
                              for r in result["lateness"]])]
    if result.get("processes"):
        p0 = result["processes"][0]
        parts += ["", f"## Planner processes: spawn to first MAVLink command (K={p0['K']}, H={p0['H']}, hidden "
                  f"{p0['hidden']}, 1 thread)", "",
                  _table(["process", "runs", "first command s (median)", "max s", "RSS MB", "of which anon MB",
                          "file MB", "peak RSS MB", "imports s", "load s", "first plan s", "torch imported"],
                         [[r["process"], r["runs"], r["first_command_s_median"], r["first_command_s_max"],
                           r["rss_mb_max"], r["rss_anon_mb_max"], r["rss_file_mb_max"], r["peak_rss_mb_max"],
                           r["import_s_median"], r["load_s_median"], r["plan_s_median"], r["torch_imported"]]
                          for r in result["processes"]])]
    if result.get("rss_stages"):
        parts += ["", f"### Where the onboard process's RSS goes ({result['rss_stages_planner']}, one process, "
                  "cumulative)", "",
                  "Anon = private memory (heap, Python objects, ORT buffers); file = pages of shared libraries "
                  "(numpy's OpenBLAS, libonnxruntime) mapped from disk, shared with other processes.", "",
                  _table(["after", "RSS MB", "anon MB", "file MB"],
                         [[st["stage"], st["rss_mb"], st["anon_mb"], st["file_mb"]] for st in result["rss_stages"]])]
    checks = verdict(result)
    if checks:
        parts += ["", f"## Against the targets (K={K}, H={H}, hidden {hidden}, {threads} thread)", "",
                  _table(["target", "wanted", "measured", "met"],
                         [[c[0], c[1], c[2], "yes" if c[3] else "**no**"] for c in checks])]
    return "\n".join(parts) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small matrix, few steps (< 2 min)")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="results folder")
    p.add_argument("--steps", type=int, default=0, help="timed steps per planner (default 200; quick 30)")
    p.add_argument("--warmup", type=int, default=0, help="warm-up rounds (default 15; quick 3)")
    p.add_argument("--configs", default="", help="K x H list, e.g. 256x15,512x15,1024x20")
    p.add_argument("--hidden", default="", help="hidden sizes, e.g. 128,256")
    p.add_argument("--threads", default="", help="thread counts, e.g. 1,2")
    p.add_argument("--layers", type=int, default=models.LAYERS,
                   help=f"hidden layers of the bench models (default {models.LAYERS})")
    p.add_argument("--activation", default=models.ACTIVATION, choices=ACTIVATIONS,
                   help=f"hidden activation of the bench models (default {models.ACTIVATION})")
    p.add_argument("--epochs", type=int, default=0, help="training epochs of the bench models (default 5; quick 1)")
    p.add_argument("--rates", default="50,100,200", help="loop rates in Hz for the lateness section")
    p.add_argument("--lateness-ticks", type=int, default=0, help="ticks per lateness run (default 250; quick 60)")
    p.add_argument("--probe-runs", type=int, default=0, help="spawns per process kind (default 3; quick 1)")
    p.add_argument("--keep-work", action="store_true", help="keep the trained models and bundles in <out>/work")
    a = p.parse_args(argv)
    q = a.quick
    a.steps = a.steps or (30 if q else 200)
    a.warmup = a.warmup or (3 if q else 15)
    a.configs = [tuple(int(x) for x in c.split("x")) for c in (a.configs or ("256x15" if q else
                                                                              "256x15,512x15,1024x20")).split(",")]
    a.hidden = [int(x) for x in (a.hidden or ("128" if q else "128,256")).split(",")]
    a.threads = [int(x) for x in (a.threads or ("1" if q else "1,2")).split(",")]
    a.epochs = a.epochs or (1 if q else 5)
    a.rates = [float(x) for x in a.rates.split(",")]
    a.lateness_ticks = a.lateness_ticks or (60 if q else 250)
    a.probe_runs = a.probe_runs or (1 if q else 3)
    a.accuracy_states = 5 if q else 20
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Progress of this program only: the quantizer logs advice on the root logger at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work" if args.keep_work else Path(tempfile.mkdtemp(prefix="dreamlink-bench-"))
    if args.keep_work and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": args.quick,
                              "steps": args.steps, "warmup": args.warmup, "train_epochs": args.epochs,
                              "layers": args.layers, "activation": args.activation}
    try:
        log.info("machine and peak")
        result["machine"] = machine.machine_info()
        result["peak"] = machine.measure_peak(args.quick)
        peak = result["peak"]["peak_gflops"]
        log.info("peak %.1f GFLOP/s (%s); training models", peak, result["peak"]["peak_from"])
        built = {h: models.build_model(h, work, args.epochs, args.layers, args.activation) for h in args.hidden}
        result["holdout_rmse"] = {h: m.holdout_rmse for h, m in built.items()}
        result["latency"], bundles = latency_matrix(args, built, work, peak)
        log.info("rollout variants")
        result["variants"] = rollout_variants(args, built, work, peak)
        log.info("step anatomy")
        result["anatomy"] = anatomy(args, bundles, peak, built)
        log.info("accuracy")
        result["accuracy"] = accuracy(args, built, bundles)
        log.info("loop lateness")
        result["lateness"] = lateness(args, built, work, bundles)
        log.info("processes")
        result["processes"] = processes(args, built, bundles, work)
        K, H, hidden, _ = TARGET_POINT
        key = (hidden, K, H, "fp32") if (hidden, K, H, "fp32") in bundles else next(
            k for k in bundles if k[3] == "fp32")
        result["rss_stages"] = rss_stages(bundles[key])
        result["rss_stages_planner"] = f"K={key[1]} H={key[2]} hidden {key[0]} fp32"
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    result["seconds"] = time.perf_counter() - started
    result["verdict"] = [{"target": c[0], "wanted": c[1], "measured": c[2], "met": bool(c[3])}
                         for c in verdict(result)]
    text = render(result)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in ("planner_bench", f"planner_bench-{stamp}"):
        (args.out / f"{name}.md").write_text(text)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(text)
    print(f"written: {args.out / 'planner_bench.md'}, {args.out / 'planner_bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
