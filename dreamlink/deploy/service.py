"""The onboard service as install-bundle sees it: restart it, and wait until it reports healthy.

"Healthy" is systemd's view of a `Type=notify` service with a watchdog: it reached
active/running (the runtime sent READY=1 after loading the bundle and planning), then stayed
there for a settle time without a restart (no crash, no watchdog timeout).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceReport:
    healthy: bool
    detail: str


class ServiceControl(Protocol):
    name: str

    def restart(self) -> None: ...

    def wait_healthy(self, timeout_s: float, settle_s: float) -> ServiceReport: ...


def systemd_running(run_dir: Path = Path("/run/systemd/system")) -> bool:
    """True when systemd is PID 1 here (sd_booted's test); false in chroots, containers, CI."""
    return run_dir.is_dir()


class SystemdService:
    """One systemd unit, driven through `systemctl` (a stable interface; no D-Bus binding needed)."""

    def __init__(
        self,
        name: str,
        systemctl: str = "systemctl",
        now_s: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 0.5,
    ) -> None:
        self.name = name if name.endswith(".service") else f"{name}.service"
        self.systemctl, self.now_s, self.sleep, self.poll_s = systemctl, now_s, sleep, poll_s
        self._restarts_before = 0

    def _show(self) -> dict[str, str]:
        out = subprocess.run(
            [self.systemctl, "show", self.name, "-p", "LoadState,ActiveState,SubState,NRestarts,Result"],
            capture_output=True,
            text=True,
            check=False,
        )
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def loaded(self) -> bool:
        return self._show().get("LoadState") == "loaded"

    def restart(self) -> None:
        self._restarts_before = int(self._show().get("NRestarts", "0") or 0)
        # --no-block: a Type=notify start blocks until READY=1; we poll instead, with our own timeout.
        res = subprocess.run(
            [self.systemctl, "restart", "--no-block", self.name], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise RuntimeError(f"systemctl restart {self.name} failed: {res.stderr.strip() or res.returncode}")
        log.info("restarting %s", self.name)

    def wait_healthy(self, timeout_s: float, settle_s: float) -> ServiceReport:
        deadline = self.now_s() + timeout_s
        up_since: float | None = None
        props: dict[str, str] = {}
        while self.now_s() < deadline:
            props = self._show()
            restarts = int(props.get("NRestarts", "0") or 0)
            state = f"{props.get('ActiveState')}/{props.get('SubState')}"
            if props.get("ActiveState") == "failed" or restarts > self._restarts_before:
                return ServiceReport(False, f"{self.name} {state} (result {props.get('Result')}, restarts {restarts})")
            if state == "active/running":
                up_since = self.now_s() if up_since is None else up_since
                if self.now_s() - up_since >= settle_s:
                    return ServiceReport(True, f"{self.name} active/running for {settle_s:.0f} s")
            else:
                up_since = None
            self.sleep(self.poll_s)
        state = f"{props.get('ActiveState')}/{props.get('SubState')}"
        return ServiceReport(False, f"{self.name} not healthy within {timeout_s:.0f} s (last state {state})")
