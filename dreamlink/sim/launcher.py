"""The process launcher: start one of dreamlink's own processes, wait until it is ready, always clean it up.

    with SitlProcess("cartpole", lockstep=True, seed=3) as sitl:
        link = Link(LinkConfig(sitl.connect_string)).open()   # binds sitl.port and listens

`LaunchedProcess` is the lifecycle every launched process shares: `python -m ...` with this checkout on its
PYTHONPATH, its output in a temporary file (a pipe nobody drains during a long flight would fill and block
it), `start()` that stops the process again if it never becomes ready (Ctrl-C included), `stop()` as SIGTERM
then SIGKILL, and the context manager. `SitlProcess` (here) and the fault proxy's `FaultProxy`
(proxy_launcher.py) say only what to run and what "ready" means.

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
from typing import IO, ClassVar, TypeVar

from dreamlink.sim.mavlink_udp import mavlink, new_parser

log = logging.getLogger(__name__)

VEHICLES = ("cartpole", "quad", "gym")
P = TypeVar("P", bound="LaunchedProcess")


class SitlError(RuntimeError):
    """The SITL process died or never sent a heartbeat; the message carries its stderr tail."""


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free a moment ago (bind port 0, read it, close): racy, but fine on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LaunchedProcess:
    """One child process of dreamlink's, from `start()` to `close()`. A context manager.

    A subclass gives `command()`, `_await_ready()` (raise `error` when the process is not ready in time) and
    may prepare in `_before_spawn()` / let go in `_after_start()`; `label` names the process in messages.
    With `pipe_stdout` its stdout is a pipe the subclass reads (stderr still goes to the log file)."""

    error: ClassVar[type[RuntimeError]] = RuntimeError
    pipe_stdout: ClassVar[bool] = False

    def __init__(self, label: str, log_prefix: str) -> None:
        self.label = label
        self._log_prefix = log_prefix
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise self.error(f"{type(self).__name__}.pid: the process is not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self: P) -> P:
        """Spawn the process and wait until it is ready; on any failure stop it again and re-raise."""
        if self._proc is not None:
            raise self.error(f"{type(self).__name__}.start: already started")
        try:
            self._before_spawn()
            self._log = tempfile.TemporaryFile(prefix=self._log_prefix)
            repo_root = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")])))
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE if self.pipe_stdout else self._log,
                                          stderr=self._log if self.pipe_stdout else subprocess.STDOUT, env=env)
            self._await_ready()
        except BaseException:
            self._after_start()
            self.close()
            raise
        self._after_start()
        return self

    def _before_spawn(self) -> None:
        """What must be in place before the process runs (nothing by default)."""

    def _await_ready(self) -> None:
        raise NotImplementedError

    def _after_start(self) -> None:
        """Let go of what `_before_spawn` took, whether the start succeeded or not (nothing by default)."""

    def output_tail(self, max_chars: int = 4000) -> str:
        """The last characters the process wrote to its log (stdout and stderr, or stderr with `pipe_stdout`)."""
        if self._log is None:
            return ""
        self._log.flush()
        size = self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, size - max_chars))
        return self._log.read().decode("utf-8", errors="replace")

    def _terminate(self, timeout_s: float) -> bytes:
        """SIGTERM, then SIGKILL after `timeout_s`; waits for the exit and returns what was left on the stdout
        pipe (b"" without one). The process must have been started."""
        proc = self._proc
        assert proc is not None
        if proc.poll() is None:
            proc.terminate()
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s pid %d ignored SIGTERM for %.1f s: killing it", self.label, proc.pid, timeout_s)
            proc.kill()
            out, _ = proc.communicate()
        return out or b""

    def stop(self, timeout_s: float = 3.0) -> object:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self: P) -> P:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class SitlProcess(LaunchedProcess):
    """One SITL vehicle process sending MAVLink to udp:127.0.0.1:`port`. A context manager."""

    error = SitlError

    def __init__(self, vehicle: str = "cartpole", port: int | None = None, lockstep: bool = False, seed: int = 0,
                 extra_args: Sequence[str] = (), heartbeat_timeout_s: float = 20.0) -> None:
        if vehicle not in VEHICLES:
            raise ValueError(f"SitlProcess.vehicle: expected one of {VEHICLES}, got {vehicle!r}")
        super().__init__(f"SITL {vehicle}", f"sitl-{vehicle}-")
        self.vehicle = vehicle
        self.port = port if port is not None else free_udp_port()
        self._port_chosen_here = port is None  # a port we picked may be taken before start(): pick again then
        self.lockstep = lockstep
        self.seed = seed
        self.extra_args = tuple(extra_args)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._listener: socket.socket | None = None
        # Where the vehicle's own socket is (learned from its first heartbeat): a second client, such as
        # a ground station or a fault proxy, talks to the vehicle there.
        self.vehicle_address: tuple[str, int] | None = None

    @property
    def connect_string(self) -> str:
        return f"udp:127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "dreamlink.sim", self.vehicle, "--out", self.connect_string,
               "--seed", str(self.seed)]
        if self.lockstep:
            cmd.append("--lockstep")
        return [*cmd, *self.extra_args]

    def _before_spawn(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._bind(self._listener)

    def _after_start(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

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

    def _await_ready(self) -> None:
        """Until the first heartbeat arrives on the bound port."""
        listener = self._listener
        assert listener is not None
        log.info("started SITL %s pid %d -> %s", self.vehicle, self.pid, self.connect_string)
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

    def stop(self, timeout_s: float = 3.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code. Safe to call twice."""
        proc = self._proc
        if proc is None:
            return None
        self._terminate(timeout_s)
        if self._log is not None and proc.returncode not in (0, None):
            log.debug("SITL pid %d exited %s:\n%s", proc.pid, proc.returncode, self.output_tail())
        return proc.returncode
