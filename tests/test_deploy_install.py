"""install-bundle with A/B slots: install, switch, health check, rollback, and power loss at every step."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from onnx_models import linear_world_model

from dreamlink.bundle import MANIFEST, Bundle, BundleError, load_bundle, write_bundle
from dreamlink.deploy.cli_commands import add_deploy_commands
from dreamlink.deploy.config import DeployConfig
from dreamlink.deploy.install import InstallError, install_bundle
from dreamlink.deploy.service import ServiceReport, SystemdService
from dreamlink.deploy.slots import SlotLayout, active_slot, read_state, recover, slot_lock, write_state
from dreamlink.spec import CARTPOLE


def make_bundle(path: Path, bias: float = 0.0, calibration: dict | None = None) -> Path:
    """A cart-pole bundle around a tiny linear world model; bias=nan makes a model that fails its health check."""
    F = np.eye(4, dtype=np.float32)
    F[0, 1] = F[2, 3] = CARTPOLE.control_period_s
    G = np.zeros((4, 1), np.float32)
    G[1, 0] = G[3, 0] = 0.02
    onnx_path = linear_world_model(path.parent / f"{path.name}.onnx", F, G, bias=np.full(4, bias, np.float32))
    write_bundle(path, CARTPOLE, {"world_model": (onnx_path, {"opset": 17})}, calibration=calibration)
    return path


def run_cli(*argv: str) -> int:
    """The deploy subcommands as `dreamlink` wires them (add_deploy_commands), run in-process."""
    parser = argparse.ArgumentParser(prog="dreamlink")
    add_deploy_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


@dataclass(frozen=True)
class Health:
    ok: bool
    reasons: tuple[str, ...] = ()


def passing(bundle: Bundle) -> Health:
    return Health(True)


@pytest.fixture()
def bundles(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    return {
        "good": make_bundle(src / "good"),
        "good2": make_bundle(src / "good2", bias=0.001),
        "nan": make_bundle(src / "nan", bias=float("nan")),
    }


@pytest.fixture()
def config(tmp_path: Path) -> DeployConfig:
    return DeployConfig(state_dir=str(tmp_path / "state"))


def current_manifest(config: DeployConfig) -> dict:
    return json.loads((config.state_path / "current" / MANIFEST).read_text())


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST).read_text())


def test_first_and_second_install_alternate_slots(bundles: dict[str, Path], config: DeployConfig) -> None:
    first = install_bundle(bundles["good"], config, health_check=passing)
    assert first.ok and first.slot == "a" and first.previous is None
    assert os.readlink(config.state_path / "current") == "slots/a"
    second = install_bundle(bundles["good2"], config, health_check=passing)
    assert second.ok and second.slot == "b" and second.previous == "a"
    assert current_manifest(config) == manifest_of(bundles["good2"])
    state = read_state(SlotLayout(config.state_path))
    assert (state.active, state.previous, state.trial) == ("b", "a", None)
    assert [e["event"] for e in state.history] == ["installed", "installed"]
    assert second.steps[-1] == "confirm" and "switch" in second.steps


def test_bundle_failing_the_runtime_health_check_is_rolled_back(bundles: dict[str, Path], config: DeployConfig) -> None:
    assert install_bundle(bundles["good"], config).ok  # the runtime's own health check
    result = install_bundle(bundles["nan"], config)
    assert not result.ok and result.rolled_back
    assert result.active == "a" and result.slot == "b"
    assert any("non-finite" in r for r in result.reasons)
    load_bundle(config.state_path / "current")  # the old one is active and still verifies
    assert current_manifest(config) == manifest_of(bundles["good"])
    state = read_state(SlotLayout(config.state_path))
    assert state.active == "a" and state.trial is None and state.history[-1]["event"] == "rollback"


def test_unverifiable_bundle_is_refused_and_nothing_changes(
    bundles: dict[str, Path], config: DeployConfig, tmp_path: Path
) -> None:
    install_bundle(bundles["good"], config, health_check=passing)
    before = (config.state_path / "state.json").read_text()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in bundles["good2"].iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    with open(corrupt / "world_model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InstallError, match="sha256 mismatch"):
        install_bundle(corrupt, config, health_check=passing)
    assert active_slot(SlotLayout(config.state_path)) == "a"
    assert (config.state_path / "state.json").read_text() == before
    assert not (config.state_path / "slots" / "b").exists()


def test_bundle_with_a_symlink_is_refused_before_the_switch(
    bundles: dict[str, Path], config: DeployConfig, tmp_path: Path
) -> None:
    install_bundle(bundles["good"], config, health_check=passing)
    linked = tmp_path / "linked"
    linked.mkdir()
    for f in bundles["good2"].iterdir():
        (linked / f.name).write_bytes(f.read_bytes())
    (linked / "notes").symlink_to("/etc/passwd")  # a link could point out of the slot
    with pytest.raises(InstallError, match="only regular files are allowed inside a bundle"):
        install_bundle(linked, config, health_check=passing)
    assert active_slot(SlotLayout(config.state_path)) == "a"
    assert sorted(p.name for p in (config.state_path / "slots").iterdir()) == ["a"]


def test_failed_first_install_leaves_no_model_active(bundles: dict[str, Path], config: DeployConfig) -> None:
    result = install_bundle(bundles["nan"], config)
    assert not result.ok and result.active is None
    assert not (config.state_path / "current").exists()


class FakeService:
    """A service that comes up healthy only on the bundle we name (as systemd would report it)."""

    name = "dreamlink.service"

    def __init__(self, config: DeployConfig, healthy_manifest: dict) -> None:
        self.config, self.healthy_manifest, self.restarts = config, healthy_manifest, []

    def restart(self) -> None:
        self.restarts.append(current_manifest(self.config))

    def wait_healthy(self, timeout_s: float, settle_s: float) -> ServiceReport:
        up = self.restarts[-1] == self.healthy_manifest
        return ServiceReport(up, "active/running" if up else "failed (watchdog timeout)")


def test_service_not_coming_up_rolls_back_and_restarts_the_old_model(
    bundles: dict[str, Path], config: DeployConfig
) -> None:
    install_bundle(bundles["good"], config, health_check=passing)
    service = FakeService(config, manifest_of(bundles["good"]))
    result = install_bundle(bundles["good2"], config, health_check=passing, service=service)
    assert not result.ok and result.rolled_back and result.active == "a"
    assert any("watchdog" in r for r in result.reasons)
    assert service.restarts == [manifest_of(bundles["good2"]), manifest_of(bundles["good"])]
    assert result.steps[-2:] == ("rollback", "rollback-service")


def test_public_key_without_verifier_is_refused(bundles: dict[str, Path], config: DeployConfig, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "bundle.pub"
    key.write_text("ed25519 public key")
    keyed = replace(config, bundle_public_key=str(key))
    # An installation without a signature verifier (dreamlink.bundle.verify_signature missing) must refuse.
    monkeypatch.setattr("dreamlink.deploy.install.find_signature_verifier", lambda: None)
    with pytest.raises(InstallError, match="bundle_public_key is set"):
        install_bundle(bundles["good"], keyed, health_check=passing, verifier=None)
    assert active_slot(SlotLayout(config.state_path)) is None

    def wrong(bundle: Bundle, key_path: Path) -> None:
        raise BundleError("signature made with another key")

    with pytest.raises(InstallError, match="signature does not verify"):
        install_bundle(bundles["good"], keyed, health_check=passing, verifier=wrong)
    seen = []
    result = install_bundle(bundles["good"], keyed, health_check=passing, verifier=lambda b, k: seen.append(k))
    assert result.ok and seen == [key]


def test_recorded_budget_that_cannot_keep_the_rate_is_refused(config: DeployConfig, tmp_path: Path) -> None:
    slow = make_bundle(tmp_path / "slow", calibration={"budget": {"device": "Cortex-A72", "p99_ms": 35.0}})
    with pytest.raises(InstallError, match=r"p99 35\.00 ms vs control period 20\.00 ms"):
        install_bundle(slow, config, health_check=passing)
    fits = make_bundle(tmp_path / "fits", calibration={"budget": {"device": "Cortex-A72", "p99_ms": 9.0}})
    assert install_bundle(fits, config, health_check=passing, this_cpu="Intel Xeon").ok
    in_seconds = make_bundle(tmp_path / "s", calibration={"budget": {"device": "Cortex-A72", "p99_s": 0.035}})
    with pytest.raises(InstallError, match=r"calibration\.budget\.p99_s: not a key dreamlink writes; the budget "
                                           r"records p99_ms \(the p99 planning latency in milliseconds\)"):
        install_bundle(in_seconds, config, health_check=passing)


def test_recover_rolls_back_a_slot_left_on_trial(bundles: dict[str, Path], config: DeployConfig) -> None:
    install_bundle(bundles["good"], config, health_check=passing)
    install_bundle(bundles["good2"], config, health_check=passing)
    layout = SlotLayout(config.state_path)
    # as if the installer of slot b died during its health check
    write_state(layout, replace(read_state(layout), previous="a", trial="b"))
    with slot_lock(layout):
        rec = recover(layout)
    assert rec.active == "a" and "rolled back unconfirmed slot b" in rec.actions[0]
    assert read_state(layout).trial is None


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from dreamlink.deploy.config import DeployConfig
    from dreamlink.deploy.install import install_bundle

    source, state_dir, kill_at, healthy = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"

    class Health:
        ok = healthy
        reasons = () if healthy else ("forced failure",)

    def hook(step, detail):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    install_bundle(source, DeployConfig(state_dir=state_dir), health_check=lambda b: Health(), on_step=hook)
    sys.exit(3)  # the kill did not happen
    """
)
OK_STEPS = ["lock", "recover", "verify-source", "signature", "budget", "copy", "verify-copy", "commit-slot",
            "mark-trial", "switch", "health-check", "confirm"]  # fmt: skip
ROLLBACK_STEPS = ["health-check", "rollback"]


@pytest.mark.parametrize(
    ("kill_at", "healthy"), [(s, True) for s in OK_STEPS] + [(s, False) for s in ROLLBACK_STEPS]
)
def test_power_loss_at_any_step_leaves_a_valid_slot_active(
    bundles: dict[str, Path], config: DeployConfig, tmp_path: Path, kill_at: str, healthy: bool
) -> None:
    install_bundle(bundles["good"], config, health_check=passing)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run(
        [sys.executable, str(script), str(bundles["good2"]), config.state_dir, kill_at, "1" if healthy else "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
    # What the service would load right after power comes back:
    current = load_bundle(config.state_path / "current")
    rolled_back = not healthy and kill_at == "rollback"
    switched = not rolled_back and OK_STEPS.index(kill_at) >= OK_STEPS.index("switch")
    expected = bundles["good2"] if switched else bundles["good"]
    assert json.loads((current.root / MANIFEST).read_text()) == manifest_of(expected)
    # What ExecStartPre (install-bundle --recover) then does: keep only a confirmed slot.
    layout = SlotLayout(config.state_path)
    with slot_lock(layout):
        rec = recover(layout)
    kept = bundles["good2"] if kill_at == "confirm" else bundles["good"]
    assert current_manifest(config) == manifest_of(kept), rec
    assert not any(p.name.startswith(".") and p.name.endswith("staging") for p in layout.slots_dir.iterdir())
    # and the device still takes updates
    assert install_bundle(bundles["good2"], config, health_check=passing).ok


def test_systemd_service_health_follows_systemctl_show(tmp_path: Path) -> None:
    """SystemdService against a stand-in `systemctl` that replays a sequence of unit states."""
    states = tmp_path / "states"
    counter = tmp_path / "n"
    fake = tmp_path / "systemctl"
    fake.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = restart ] && exit 0\n'
        f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}\n"
        f"line=$(sed -n \"$((n+1))p\" {states}); [ -z \"$line\" ] && line=$(tail -n1 {states})\n"
        'echo "LoadState=loaded"; echo "$line" | tr " " "\\n"\n'
    )
    fake.chmod(0o755)
    clock = [0.0]

    def service() -> SystemdService:
        counter.unlink(missing_ok=True)
        return SystemdService("dreamlink", systemctl=str(fake), now_s=lambda: clock[0],
                              sleep=lambda s: clock.__setitem__(0, clock[0] + s), poll_s=1.0)  # fmt: skip

    states.write_text(
        "ActiveState=active SubState=running NRestarts=0\n"  # restart() reads the restart count
        "ActiveState=activating SubState=start NRestarts=0\n"
        "ActiveState=active SubState=running NRestarts=0\n"
    )
    s = service()
    s.restart()
    assert s.wait_healthy(timeout_s=30, settle_s=3).healthy
    states.write_text(
        "ActiveState=active SubState=running NRestarts=2\n"
        "ActiveState=active SubState=running NRestarts=2\n"
        "ActiveState=activating SubState=auto-restart NRestarts=3\n"
    )
    s = service()
    s.restart()
    report = s.wait_healthy(timeout_s=30, settle_s=5)
    assert not report.healthy and "restarts 3" in report.detail
    states.write_text(
        "ActiveState=active SubState=running NRestarts=0\n"
        "ActiveState=activating SubState=start NRestarts=0\n"  # never comes up
    )
    s = service()
    s.restart()
    report = s.wait_healthy(timeout_s=10, settle_s=1)
    assert not report.healthy and "not healthy within 10 s" in report.detail


def test_install_bundle_command(bundles: dict[str, Path], config: DeployConfig, capsys) -> None:
    state = ["--state-dir", config.state_dir, "--no-service"]
    assert run_cli("install-bundle", str(bundles["good"]), *state) == 0
    out = capsys.readouterr().out
    assert "health-check   passed" in out and "installed" in out and "slot a" in out
    assert run_cli("install-bundle", str(bundles["nan"]), *state) == 1
    err = capsys.readouterr().err
    assert "REJECTED" in err and "non-finite" in err and "active slot a" in err
    assert run_cli("install-bundle", str(bundles["good2"]), *state) == 0
    assert run_cli("install-bundle", "--rollback", *state) == 0
    assert current_manifest(config) == manifest_of(bundles["good"])
    assert run_cli("install-bundle", "--status", *state) == 0
    status = json.loads(capsys.readouterr().out.split("rolled back: current -> slots/a\n")[-1])
    assert status["active"] == "a" and status["history"][-1]["reason"] == "manual rollback"
    assert run_cli("install-bundle", "--recover", *state) == 0
    assert "active slot a" in capsys.readouterr().out
    assert run_cli("install-bundle", str(config.state_path / "nothing"), *state) == 2
    assert "no such bundle" in capsys.readouterr().err
