"""Start the fault proxy as its own process (alone, or in front of a SITL), always clean it up.

    with SitlBehindProxy("cartpole", to_runtime_faults=FaultSpec(drop_rate=0.2), seed=3) as sim:
        link = Link(LinkConfig(sim.connect_string)).open()     # same as with a bare SitlProcess
        ...
    sim.proxy_counters   # {"to_runtime": {"received": ..., "dropped": ...}, "to_vehicle": {...}}

`SitlBehindProxy` starts the SITL bound to a known port and sending to the proxy's vehicle side,
then the proxy, which sends to `connect_string`'s port where the runtime listens (the plumbing is
drawn in `dreamlink.sim.fault_proxy`). `FaultProxy` alone is the proxy process, for a vehicle
started some other way; its start, stop and cleanup are the process launcher's (`launcher.LaunchedProcess`),
with "ready" meaning the proxy's `ready` event on stdout.
"""

from __future__ import annotations

import json
import logging
import select
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from dreamlink.sim.fault_proxy import DIRECTIONS, NO_FAULTS, FaultSpec
from dreamlink.sim.launcher import LaunchedProcess, SitlError, SitlProcess, free_udp_port

log = logging.getLogger(__name__)


class ProxyError(RuntimeError):
    """The proxy process died or never became ready; the message carries its stderr tail."""


class FaultProxy(LaunchedProcess):
    """The fault proxy process: vehicle side on `listen_vehicle`, forwarding to the runtime on `to_runtime`."""

    error = ProxyError
    pipe_stdout = True  # its events (ready, counters) are JSON lines on stdout; its log goes to stderr

    def __init__(self, to_runtime: int, listen_vehicle: int | None = None,
                 to_runtime_faults: FaultSpec = NO_FAULTS, to_vehicle_faults: FaultSpec = NO_FAULTS,
                 seed: int = 0, vehicle_addr: tuple[str, int] | None = None, ready_timeout_s: float = 10.0) -> None:
        super().__init__("fault proxy", "fault-proxy-")
        self.to_runtime = to_runtime
        self.listen_vehicle = listen_vehicle if listen_vehicle is not None else free_udp_port()
        self.faults = {"to_runtime": to_runtime_faults, "to_vehicle": to_vehicle_faults}
        self.seed = seed
        self.vehicle_addr = vehicle_addr
        self.ready_timeout_s = ready_timeout_s
        self.counters: dict[str, Any] | None = None  # filled in by stop()
        self.runtime_side_port: int | None = None

    @property
    def vehicle_out(self) -> str:
        """What the SITL's `--out` must be."""
        return f"udp:127.0.0.1:{self.listen_vehicle}"

    @property
    def connect_string(self) -> str:
        """Where the runtime's Link listens."""
        return f"udp:127.0.0.1:{self.to_runtime}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "dreamlink.sim.fault_proxy", "--listen-vehicle", str(self.listen_vehicle),
               "--to-runtime", str(self.to_runtime), "--seed", str(self.seed)]
        for direction in DIRECTIONS:
            text = self.faults[direction].to_text()
            if text:
                cmd += [f"--faults-{direction.replace('_', '-')}", text]
        if self.vehicle_addr is not None:
            cmd += ["--vehicle", f"{self.vehicle_addr[0]}:{self.vehicle_addr[1]}"]
        return cmd

    def _await_ready(self) -> None:
        ready = self._read_event("ready", self.ready_timeout_s)
        self.runtime_side_port = int(ready["runtime_side_port"])
        log.info("started fault proxy pid %d: %s -> %s, faults %s", self.pid, self.vehicle_out,
                 self.connect_string, ready["faults"])

    def _read_event(self, name: str, timeout_s: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self._proc.stdout], [], [], 0.1)
            if readable:
                line = self._proc.stdout.readline()
                if not line:
                    break  # the process closed stdout: it exited
                event = json.loads(line)
                if event.get("event") == name:
                    return dict(event)
            elif self._proc.poll() is not None:
                break
        raise ProxyError(f"fault proxy (pid {self._proc.pid}) gave no {name!r} event within {timeout_s:.1f} s "
                         f"(exit code {self._proc.poll()}):\n{self.output_tail()}")

    def stop(self, timeout_s: float = 3.0) -> dict[str, Any] | None:
        """SIGTERM, read the counters it prints, SIGKILL after `timeout_s`. Returns the counters."""
        proc = self._proc
        if proc is None or self.counters is not None:
            return self.counters
        out = self._terminate(timeout_s)
        for line in reversed(out.decode("utf-8", errors="replace").splitlines()):
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "counters":
                self.counters = {d: event[d] for d in DIRECTIONS}
                break
        else:
            log.warning("fault proxy pid %d exited %s without counters:\n%s", proc.pid, proc.returncode,
                        self.output_tail())
        return self.counters


class SitlBehindProxy:
    """A SITL vehicle whose link runs through a `FaultProxy`. Shaped like `SitlProcess` for the runtime."""

    def __init__(self, vehicle: str = "cartpole", to_runtime_faults: FaultSpec = NO_FAULTS,
                 to_vehicle_faults: FaultSpec = NO_FAULTS, port: int | None = None, lockstep: bool = False,
                 seed: int = 0, proxy_seed: int | None = None, extra_args: Sequence[str] = (),
                 heartbeat_timeout_s: float = 20.0) -> None:
        self.port = port if port is not None else free_udp_port()  # where the runtime listens
        vehicle_side, board_port = free_udp_port(), free_udp_port()
        self.sitl = SitlProcess(vehicle, port=vehicle_side, lockstep=lockstep, seed=seed,
                                extra_args=(*extra_args, "--bind", f"127.0.0.1:{board_port}"),
                                heartbeat_timeout_s=heartbeat_timeout_s)
        self.proxy = FaultProxy(self.port, vehicle_side, to_runtime_faults, to_vehicle_faults,
                                seed=seed if proxy_seed is None else proxy_seed,
                                vehicle_addr=("127.0.0.1", board_port))
        self.vehicle_addr = ("127.0.0.1", board_port)

    @property
    def connect_string(self) -> str:
        return self.proxy.connect_string

    @property
    def proxy_counters(self) -> dict[str, Any] | None:
        return self.proxy.counters

    def start(self) -> SitlBehindProxy:
        self.sitl.start()  # binds the vehicle-side port until the first heartbeat, then lets go of it
        try:
            self.proxy.start()
        except BaseException:
            self.sitl.close()
            raise
        return self

    def close(self) -> None:
        try:
            self.proxy.close()
        finally:
            self.sitl.close()

    def __enter__(self) -> SitlBehindProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["FaultProxy", "FaultSpec", "ProxyError", "SitlBehindProxy", "SitlError"]
