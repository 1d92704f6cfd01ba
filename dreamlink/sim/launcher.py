"""Start a SITL vehicle as its own process, wait for its first heartbeat, always clean it up.

    with SitlProcess("cartpole", lockstep=True, seed=3) as sitl:
        link = Link(LinkConfig(sitl.connect_string)).open()   # binds sitl.port and listens

The SITL sends to udp:127.0.0.1:PORT from its own socket (PX4 style), so the client *listens* on
PORT. To see the first heartbeat the launcher binds PORT itself before starting the process and
closes it again once a heartbeat arrived, so the client can bind it; the SITL keeps sending at its
own rate, so the client's first messages arrive within a heartbeat period or a telemetry period.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from dreamlink.sim.mavlink_udp import mavlink, new_parser

log = logging.getLogger(__name__)

VEHICLES = ("cartpole", "quad", "gym")


class SitlError(RuntimeError):
    """The SITL process died or never sent a heartbeat; the message carries its stderr tail."""


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free a moment ago (bind port 0, read it, close): racy, but fine on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SitlProcess:
    """One SITL vehicle process sending MAVLink to udp:127.0.0.1:`port`. A context manager."""

    def __init__(self, vehicle: str = "cartpole", port: int | None = None, lockstep: bool = False, seed: int = 0,
                 extra_args: Sequence[str] = (), heartbeat_timeout_s: float = 20.0) -> None:
        if vehicle not in VEHICLES:
            raise ValueError(f"SitlProcess.vehicle: expected one of {VEHICLES}, got {vehicle!r}")
        self.vehicle = vehicle
        self.port = port if port is not None else free_udp_port()
        self._port_chosen_here = port is None  # a port we picked may be taken before start(): pick again then
        self.lockstep = lockstep
        self.seed = seed
        self.extra_args = tuple(extra_args)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        # Where the vehicle's own socket is (learned from its first heartbeat): a second client, such as
        # a ground station or a fault proxy, talks to the vehicle there.
        self.vehicle_address: tuple[str, int] | None = None
        self._log: IO[bytes] | None = None

    @property
    def connect_string(self) -> str:
        return f"udp:127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise SitlError("SitlProcess.pid: the process is not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "dreamlink.sim", self.vehicle, "--out", self.connect_string,
               "--seed", str(self.seed)]
        if self.lockstep:
            cmd.append("--lockstep")
        return [*cmd, *self.extra_args]

    def start(self) -> SitlProcess:
        if self._proc is not None:
            raise SitlError("SitlProcess.start: already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._bind(listener)
            # stderr to a file, not a pipe: nobody drains a pipe during a long flight and a full pipe
            # would block the simulator's logging.
            self._log = tempfile.TemporaryFile(prefix=f"sitl-{self.vehicle}-")
            repo_root = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")])))
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                          stderr=subprocess.STDOUT, env=env)
            log.info("started SITL %s pid %d -> %s", self.vehicle, self._proc.pid, self.connect_string)
            self._await_heartbeat(listener)
        except BaseException:
            listener.close()
            self.close()
            raise
        listener.close()
        return self

    def _bind(self, listener: socket.socket, attempts: int = 5) -> None:
        """Bind the port the SITL will send to. A port `free_udp_port` chose can be taken in the meantime by
        another process's ephemeral socket (flights run side by side): then choose again; a port the caller
        named is an error."""
        for attempt in range(attempts):
            try:
                listener.bind(("127.0.0.1", self.port))
                return
            except OSError as exc:
                if not self._port_chosen_here or attempt == attempts - 1:
                    raise SitlError(f"SITL port udp:127.0.0.1:{self.port} is not free ({exc}); pick another port"
                                    ) from exc
                log.info("SITL port %d was taken since it was chosen; choosing another", self.port)
                self.port = free_udp_port()

    def _await_heartbeat(self, listener: socket.socket) -> None:
        parser = new_parser()
        deadline = time.monotonic() + self.heartbeat_timeout_s
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise SitlError(f"SITL {self.vehicle} exited with code {self.returncode} before its first "
                                f"heartbeat:\n{self.output_tail()}")
            listener.settimeout(0.1)
            try:
                datagram, address = listener.recvfrom(65536)
            except TimeoutError:
                continue
            for msg in parser.parse_buffer(datagram) or []:
                if msg.get_msgId() == mavlink.MAVLINK_MSG_ID_HEARTBEAT:
                    self.vehicle_address = (str(address[0]), int(address[1]))
                    return
        raise SitlError(f"SITL {self.vehicle} (pid {self.pid}) sent no heartbeat to {self.connect_string} within "
                        f"{self.heartbeat_timeout_s:.1f} s; its output:\n{self.output_tail()}")

    def output_tail(self, max_chars: int = 4000) -> str:
        """The last characters the process wrote to stdout/stderr."""
        if self._log is None:
            return ""
        self._log.flush()
        size = self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, size - max_chars))
        return self._log.read().decode("utf-8", errors="replace")

    def stop(self, timeout_s: float = 3.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code. Safe to call twice."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("SITL pid %d ignored SIGTERM for %.1f s: killing it", proc.pid, timeout_s)
                proc.kill()
                proc.wait()
        if self._log is not None and proc is not None and proc.returncode not in (0, None):
            log.debug("SITL pid %d exited %s:\n%s", proc.pid, proc.returncode, self.output_tail())
        return None if proc is None else proc.returncode

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> SitlProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
