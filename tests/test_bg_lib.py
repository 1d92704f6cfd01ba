"""scripts/bg-lib.sh: what `make image-test` starts in the background, it stops, wrapper and all.

The image test itself needs root and debootstrap, so its start/stop is tested here with a stand-in wrapped
the same way: a shell function (as `in_root`) running a program that forks a child (as chroot's command may)
which binds a UDP port (as the SITL's peer does). The cleanup used to kill `$!`, the wrapper's PID, and left
the child bound to its port; with bg_start/bg_stop_all nothing is left and the port is free again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc (the image tests run on Linux)")

BG_LIB = Path(__file__).resolve().parents[1] / "scripts" / "bg-lib.sh"

# The stand-in: the parent forks, the child binds 127.0.0.1:PORT and sleeps; the parent waits for it.
# With IGNORE_TERM the child ignores SIGTERM (bg_stop_all must SIGKILL it).
CHILD = """
import os, signal, socket, sys, time
port, marker, ignore_term = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
if os.fork() == 0:
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    time.sleep(120)
else:
    os.wait()
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def live_pids(marker: str) -> list[int]:
    """PIDs of live (not zombie) processes whose command line holds `marker`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if marker.encode() in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run_script(body: str, port: int, marker: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`body` in bash with bg-lib.sh sourced, `wrapped PORT MARKER IGNORE_TERM` defined as the stand-in."""
    script = f"""set -euo pipefail
. {BG_LIB}
wrapped() {{ env PYTHONDONTWRITEBYTECODE=1 {sys.executable} -c '{CHILD}' "$@"; }}
wait_bound() {{ for _ in $(seq 100); do udp_port_bound "$1" && return 0; sleep 0.1; done; return 1; }}
PORT={port} MARKER={marker}
{body}
"""
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL)


@pytest.fixture()
def stand_in():  # type: ignore[no-untyped-def]
    """(port, marker); whatever a test leaves behind is killed afterwards, so a failure leaks nothing."""
    marker = f"bg-lib-test-{uuid.uuid4().hex}"
    yield free_udp_port(), marker
    for pid in live_pids(marker):
        os.kill(pid, signal.SIGKILL)


def test_killing_the_wrapper_pid_leaves_the_child_bound(stand_in: tuple[int, str]) -> None:
    """The bug, shown: `kill $!` stops the wrapper (the subshell of a backgrounded function), not its child."""
    port, marker = stand_in
    body = """wrapped "$PORT" "$MARKER" 0 > /dev/null 2>&1 &
P=$!
wait_bound "$PORT"
kill "$P"
sleep 0.5"""
    r = run_script(body, port, marker)
    assert r.returncode == 0, r.stderr
    assert live_pids(marker), "the stand-in's child was expected to outlive `kill $!`"
    assert not port_free(port)


def test_stop_all_on_exit_leaves_nothing_running_and_the_port_free(stand_in: tuple[int, str]) -> None:
    """As image-lib.sh does: bg_start through a function, the script dies, the EXIT trap stops everything."""
    port, marker = stand_in
    body = """trap 'bg_stop_all' EXIT
bg_start wrapped "$PORT" "$MARKER" 0 > /dev/null 2>&1
wait_bound "$PORT" || { echo "stand-in never bound $PORT" >&2; exit 3; }
echo "bound"
exit 1  # as `die` does"""
    r = run_script(body, port, marker)
    assert (r.returncode, r.stdout.strip()) == (1, "bound"), r.stderr
    assert live_pids(marker) == []
    assert port_free(port)


def test_stop_all_kills_what_ignores_sigterm(stand_in: tuple[int, str]) -> None:
    """A child that ignores SIGTERM is killed after the grace period; the port check then says it is free."""
    port, marker = stand_in
    body = """bg_start wrapped "$PORT" "$MARKER" 1
wait_bound "$PORT"
T0=$SECONDS
BG_STOP_GRACE_S=1 bg_stop_all
if udp_port_bound "$PORT"; then echo "$PORT still bound" >&2; exit 4; fi
echo "stopped in $((SECONDS - T0)) s" """
    t0 = time.monotonic()
    r = run_script(body, port, marker)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 15
    assert live_pids(marker) == []
    assert port_free(port)


def test_here_document_reaches_the_background_command(stand_in: tuple[int, str]) -> None:
    """image-test.sh starts its notify listener as `bg_start in_root python - <<'EOF'`: stdin must get through."""
    port, marker = stand_in
    body = f"""bg_start env {sys.executable} - "$MARKER" <<EOF
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", $PORT))
time.sleep(120)
EOF
wait_bound "$PORT"
bg_stop_all
if udp_port_bound "$PORT"; then echo "$PORT still bound" >&2; exit 4; fi"""
    r = run_script(body, port, marker)
    assert r.returncode == 0, r.stderr
    assert live_pids(marker) == []
    assert port_free(port)
