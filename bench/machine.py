"""What the numbers were measured on, and this machine's single-core fp32 matmul peak.

The peak is measured, not looked up: the best sgemm rate one thread reaches through ONNX Runtime
(MLAS, the kernels the fused planner runs on), numpy (its OpenBLAS) and torch (MKL), over square
and planner-like tall-skinny shapes, best of several runs. The highest figure is the peak every
"% of peak" in the report divides by, so the share is never flattered by a weak reference.

numpy's measurement runs in a child process with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (they
are read when OpenBLAS loads, and some machines here set them to work around old OpenBLAS builds;
they slow a current one), and records which OpenBLAS kernel it then ran (threadpoolctl).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

# (M, K, N): square sgemm, and the shapes of a planner step (K samples x hidden, x ensemble).
PEAK_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048), (2560, 256, 256), (512, 256, 256))
QUICK_PEAK_SHAPES = ((1024, 1024, 1024), (2560, 256, 256))
INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "avx_vnni", "amx_tile", "asimd", "sve")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = (s.strip() for s in line.split(":", 1))
                info.setdefault(key, value)
    except OSError:
        pass
    return info


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("dreamlink", "numpy", "onnxruntime", "onnx", "torch", "pytorch_mppi", "pymavlink"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


def _git_commit() -> str:
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent.parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent.parent)
        return proc.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "-"


def machine_info() -> dict[str, Any]:
    """CPU model, flags, cores, memory, library versions, load: the header of every report."""
    cpu = _cpuinfo()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "flags": [f for f in INTERESTING_FLAGS if f in flags],
        "kernel": platform.release(),
        "versions": _versions(),
        "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")},
        "loadavg_start": os.getloadavg(),
        "git": _git_commit(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _best_rate(fn: Any, flops: float, repeats: int) -> float:
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def ort_sgemm_gflops(m: int, k: int, n: int, repeats: int) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.random((m, k), dtype=np.float32), "b": rng.random((k, n), dtype=np.float32)}
    return _best_rate(lambda: sess.run(None, feeds), 2.0 * m * k * n, repeats)


def torch_sgemm_gflops(m: int, k: int, n: int, repeats: int) -> float:
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.rand(m, k), torch.rand(k, n)
        with torch.inference_mode():
            return _best_rate(lambda: torch.matmul(a, b), 2.0 * m * k * n, repeats)
    finally:
        torch.set_num_threads(saved)


_NUMPY_CHILD = r"""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
shapes, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
out = {"rates": {}, "blas": []}
with threadpool_limits(1):
    out["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                   for d in threadpool_info()]
    rng = np.random.default_rng(0)
    for m, k, n in shapes:
        a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
        a @ b; a @ b
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t0)
        out["rates"][f"{m}x{k}x{n}"] = 2.0 * m * k * n / best / 1e9
print(json.dumps(out))
"""


def numpy_sgemm_gflops(shapes: tuple[tuple[int, int, int], ...], repeats: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    proc = subprocess.run([sys.executable, "-c", _NUMPY_CHILD, json.dumps(shapes), str(repeats)], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"rates": {}, "blas": [], "error": proc.stderr[-500:]}
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def measure_peak(quick: bool) -> dict[str, Any]:
    """Single-thread sgemm GFLOP/s through ORT, numpy and torch; `peak_gflops` is the best of all."""
    shapes = QUICK_PEAK_SHAPES if quick else PEAK_SHAPES
    repeats = 5 if quick else 15
    rows = []
    for m, k, n in shapes:
        rows.append({"library": "onnxruntime (MLAS)", "shape": f"{m}x{k}x{n}",
                     "gflops": ort_sgemm_gflops(m, k, n, repeats)})
        rows.append({"library": "torch (MKL)", "shape": f"{m}x{k}x{n}", "gflops": torch_sgemm_gflops(m, k, n, repeats)})
    numpy_result = numpy_sgemm_gflops(shapes, repeats)
    blas = numpy_result.get("blas") or [{}]
    label = f"numpy ({blas[0].get('internal_api', '?')} {blas[0].get('architecture', '')})".replace(" )", ")")
    for shape, rate in numpy_result.get("rates", {}).items():
        rows.append({"library": label, "shape": shape, "gflops": rate})
    best = max(rows, key=lambda r: r["gflops"])
    return {"rows": rows, "peak_gflops": best["gflops"], "peak_from": f"{best['library']} {best['shape']}",
            "numpy_blas": numpy_result.get("blas"), "numpy_error": numpy_result.get("error")}
