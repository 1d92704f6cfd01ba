"""A planner process from start to its first command, run as a child of the benchmark.

    probe.py onboard BUNDLE PORT          # the onboard stack: numpy + onnxruntime + pymavlink, no torch
    probe.py torch CHECKPOINT PORT K H    # a torch-based planner: torch + pytorch-mppi on the same model
    probe.py stages BUNDLE                # RSS after each step of an onboard start (no command sent)

Each imports what it needs, loads its model, plans once from a near-upright state and sends the
first action as a MAVLink SET_ACTUATOR_CONTROL_TARGET through dreamlink's own link and motor-board
profile to 127.0.0.1:PORT, where the parent timestamps its arrival (the parent's clock runs from
before it spawned this process, so interpreter start-up counts). The onboard probe follows
`dreamlink run` (runtime/onboard.py `fly`): bundle, planner, one warm-up plan, heap trimmed, link.
Then it prints one JSON line: its RSS (VmRSS) and peak RSS (VmHWM, the number the 80 MB target bounds) from
/proc/self/status, and its own phase times.
"""

from __future__ import annotations

import json
import sys
import time

T0 = time.monotonic()


def _rss_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def _trim_heap() -> None:
    """What `fly` does after its warm-up plan: glibc's free heap back to the OS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _send_first_command(spec, action, port: int) -> None:  # type: ignore[no-untyped-def]
    from dreamlink.firmware_bridge.link import Link, LinkConfig
    from dreamlink.firmware_bridge.motor_board import MotorBoardProfile

    link = Link(LinkConfig(connect=f"udpout:127.0.0.1:{port}", heartbeat_period_s=0.0)).open()
    try:
        MotorBoardProfile(link, spec).send(action)
    finally:
        link.close()


def onboard(bundle_path: str, port: int) -> dict[str, object]:
    import numpy as np

    from dreamlink.bundle import load_bundle
    from dreamlink.firmware_bridge import link  # noqa: F401  (the onboard import set, timed with the rest)
    from dreamlink.runtime.fused import FusedPlanner
    from dreamlink.runtime.tasks import default_task

    t_import = time.monotonic()
    bundle = load_bundle(bundle_path)
    planner = FusedPlanner.from_bundle(bundle, default_task(bundle.spec), np.random.default_rng(0))
    t_load = time.monotonic()
    state = np.array([0.0, 0.0, 0.02, 0.0], np.float32)
    plan = planner.plan(state, planner.initial_plan(), 0.0)
    _trim_heap()
    t_plan = time.monotonic()
    _send_first_command(bundle.spec, plan.actions[0], port)
    t_sent = time.monotonic()
    return {"import_s": t_import - T0, "load_s": t_load - t_import, "plan_s": t_plan - t_load,
            "send_s": t_sent - t_plan, "torch_imported": "torch" in sys.modules, **_rss_kb()}


def torch_planner(checkpoint: str, port: int, samples: int, horizon: int) -> dict[str, object]:
    import numpy as np
    import torch
    from peers import PytorchMppiPlanner

    from dreamlink.learning.train import load_checkpoint
    from dreamlink.runtime.mppi import MppiConfig
    from dreamlink.runtime.tasks import default_task

    t_import = time.monotonic()
    torch.set_num_threads(1)
    model = load_checkpoint(checkpoint).eval()
    spec = model.spec
    planner = PytorchMppiPlanner(model, spec, default_task(spec), MppiConfig(samples=samples, horizon=horizon), 0)
    t_load = time.monotonic()
    action = planner.step(np.array([0.0, 0.0, 0.02, 0.0], np.float32))
    t_plan = time.monotonic()
    _send_first_command(spec, np.asarray(action, np.float32).reshape(-1), port)
    t_sent = time.monotonic()
    return {"import_s": t_import - T0, "load_s": t_load - t_import, "plan_s": t_plan - t_load,
            "send_s": t_sent - t_plan, "torch_imported": True, **_rss_kb()}


def stages(bundle_path: str) -> dict[str, object]:
    """RSS after each step of an onboard start, to show where the megabytes go."""
    steps: list[dict[str, object]] = [{"stage": "python", **_rss_kb()}]
    import numpy as np

    steps.append({"stage": "+ numpy", **_rss_kb()})
    import onnxruntime  # noqa: F401

    steps.append({"stage": "+ onnxruntime", **_rss_kb()})
    from dreamlink.firmware_bridge.link import Link  # noqa: F401  (pymavlink)

    steps.append({"stage": "+ pymavlink (dreamlink link)", **_rss_kb()})
    from dreamlink.bundle import load_bundle
    from dreamlink.runtime.fused import FusedPlanner
    from dreamlink.runtime.tasks import default_task

    steps.append({"stage": "+ dreamlink runtime modules", **_rss_kb()})
    bundle = load_bundle(bundle_path)
    steps.append({"stage": "bundle verified (hashes, ONNX contract)", **_rss_kb()})
    planner = FusedPlanner.from_bundle(bundle, default_task(bundle.spec), np.random.default_rng(0))
    steps.append({"stage": "planner session + bound buffers", **_rss_kb()})
    state = np.array([0.0, 0.0, 0.02, 0.0], np.float32)
    warm = planner.initial_plan()
    planner.plan(state, warm, 0.0)
    steps.append({"stage": "first plan", **_rss_kb()})
    _trim_heap()
    steps.append({"stage": "heap trimmed (as dreamlink run does)", **_rss_kb()})
    for _ in range(5):
        planner.plan(state, warm, 0.0)
    steps.append({"stage": "after 5 more plans", **_rss_kb()})
    return {"stages": steps}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "onboard":
        result = onboard(sys.argv[2], int(sys.argv[3]))
    elif mode == "stages":
        result = stages(sys.argv[2])
    elif mode == "torch":
        result = torch_planner(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit(f"probe.py: unknown mode {mode!r}; expected 'onboard' or 'torch'")
    print(json.dumps(result), flush=True)
