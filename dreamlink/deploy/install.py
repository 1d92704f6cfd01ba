"""install-bundle: put a new model into the inactive slot, switch to it, keep it only if it is healthy.

The steps, each logged and each followed by `on_step(name, detail)` (tests kill the process there)::

    lock          take the slot lock (one installer at a time; the kernel drops it on kill -9)
    recover       finish or undo whatever an interrupted install left behind
    verify-source hashes, schema, ONNX contracts of the bundle given
    signature     Ed25519 signature against `bundle_public_key`, when one is configured
    budget        the calibration's recorded device budget, when present
    copy          fresh copy into slots/.X.staging, every file and folder fsynced
    verify-copy   the copy verifies and carries the same manifest bytes
    commit-slot   rename the staging folder to slots/X
    mark-trial    state.json: X is on trial, the old slot is `previous`
    switch        `current` -> slots/X in one rename
    health-check  load, plan N ticks on recorded states, finite actions inside limits, p99 in budget
    service       restart the service and wait until systemd reports it running and it stays up
    confirm       state.json: X is active, nothing on trial

Any failure after `switch` rolls back to the previous slot (`rollback`, then `rollback-service`
restarts the old model). A failure before it leaves the active slot untouched. A power cut
between `switch` and `confirm` leaves the new slot on trial; `recover` (run at the next
install and before every service start) rolls it back.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dreamlink.bundle import MANIFEST, Bundle, BundleError, load_bundle
from dreamlink.deploy.budget import judge_budget
from dreamlink.deploy.config import DeployConfig, HealthConfig
from dreamlink.deploy.device import read_cpu
from dreamlink.deploy.durable import copy_tree_durable, fsync_dir, remove_tree_durable
from dreamlink.deploy.service import ServiceControl
from dreamlink.deploy.slots import (
    SlotLayout,
    active_slot,
    other_slot,
    read_state,
    recover,
    slot_is_valid,
    slot_lock,
    switch_to,
    utc_now,
    write_state,
)

log = logging.getLogger(__name__)


class InstallError(Exception):
    """The bundle was refused before anything changed; the active slot is untouched."""


class HealthLike(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def reasons(self) -> tuple[str, ...]: ...


HealthCheck = Callable[[Bundle], HealthLike]
SignatureVerifier = Callable[[Bundle, Path], None]  # raises BundleError when the signature does not verify


@dataclass(frozen=True)
class InstallResult:
    ok: bool
    active: str | None  # the slot `current` points at afterwards
    slot: str  # the slot the bundle was copied into
    previous: str | None
    rolled_back: bool
    reasons: tuple[str, ...]
    steps: tuple[str, ...]
    health: Any = None


def runtime_health_check(health: HealthConfig) -> HealthCheck:
    """The runtime's health check with this device's settings (recorded states, budget)."""

    def check(bundle: Bundle) -> HealthLike:
        from dreamlink.runtime.health import run_health_check  # deferred: onnxruntime sessions, planner

        states = None
        if health.states:
            try:
                states = np.load(health.states, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise InstallError(f"deploy.health.states: cannot read {health.states} ({e})") from None
            if states.ndim != 2 or states.shape[1] != bundle.spec.state_dim or len(states) == 0:
                raise InstallError(
                    f"deploy.health.states: {health.states} has shape {states.shape}, "
                    f"expected [N,{bundle.spec.state_dim}] states of {bundle.spec.name}"
                )
        return run_health_check(bundle, n_ticks=health.ticks, states=states, budget_s=health.budget_s or None)

    return check


def find_signature_verifier() -> SignatureVerifier | None:
    """The bundle package's signature check, once bundle signing exists (`bundle.verify_signature`)."""
    import dreamlink.bundle as bundle_module

    return getattr(bundle_module, "verify_signature", None)


def _manifest_digest(root: Path) -> str:
    return hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()


def install_bundle(
    source: str | os.PathLike[str],
    config: DeployConfig,
    *,
    health_check: HealthCheck | None = None,
    skip_health: bool = False,
    service: ServiceControl | None = None,
    verifier: SignatureVerifier | None = None,
    on_step: Callable[[str, str], None] = lambda step, detail: None,
    this_cpu: str | None = None,
) -> InstallResult:
    """Install `source` (a bundle folder or .tar) into the inactive slot of `config.state_dir`.

    Returns the outcome; a health or service failure is rolled back and reported with
    `ok=False, rolled_back=True`. Raises InstallError when the bundle is refused up front.
    """
    layout = SlotLayout(config.state_path)
    steps: list[str] = []

    def step(name: str, detail: str = "") -> None:
        log.info("install-bundle: %s%s", name, f": {detail}" if detail else "")
        steps.append(name)
        on_step(name, detail)

    with slot_lock(layout):
        step("lock", str(layout.lock_file))
        rec = recover(layout)
        step("recover", "; ".join(rec.actions) or "nothing to recover")

        try:
            bundle = load_bundle(source)
        except BundleError as e:
            raise InstallError(f"refused {source}: {e}") from None
        step("verify-source", f"{bundle.spec.name}, {len(bundle.manifest.files)} files")

        _check_signature(bundle, config, verifier)
        step("signature", "verified" if config.bundle_public_key else "no bundle_public_key configured, not checked")

        try:
            verdict = judge_budget(bundle.manifest, this_cpu if this_cpu is not None else read_cpu().model)
        except BundleError as e:
            raise InstallError(f"refused {source}: {e}") from None
        if not verdict.fits:
            raise InstallError(f"refused {source}: the bundle's calibrated budget does not fit ({verdict.message})")
        if verdict.same_device is False:
            log.warning("install-bundle: budget measured on another device; run `dreamlink calibrate` here")
        step("budget", verdict.message)

        previous = active_slot(layout)
        target = other_slot(previous)
        staging = layout.staging(target)
        remove_tree_durable(staging)
        remove_tree_durable(layout.slot(target))
        try:
            files = copy_tree_durable(bundle.root, staging)
        except OSError as e:
            remove_tree_durable(staging)
            raise InstallError(f"could not copy {source} into slot {target}: {e}") from None
        fsync_dir(layout.slots_dir)
        step("copy", f"{len(files)} files into {staging}")

        try:
            copy = load_bundle(staging)
            if _manifest_digest(copy.root) != _manifest_digest(bundle.root):
                raise BundleError(f"{MANIFEST} differs from the source after copying")
        except BundleError as e:
            remove_tree_durable(staging)
            raise InstallError(f"the copy in slot {target} does not verify ({e}); check the storage") from None
        step("verify-copy")

        os.replace(staging, layout.slot(target))
        fsync_dir(layout.slots_dir)
        step("commit-slot", str(layout.slot(target)))

        state = read_state(layout)
        details = {
            "source": str(Path(source).resolve()),
            "vehicle": bundle.spec.name,
            "bundle_created_utc": bundle.manifest.created_utc,
            "manifest_sha256": _manifest_digest(bundle.root),
            "installed_utc": utc_now(),
        }
        state = replace(state, active=previous, previous=previous, trial=target, slots={**state.slots, target: details})
        write_state(layout, state)
        step("mark-trial", f"slot {target} on trial, previous {previous}")

        switch_to(layout, target)
        step("switch", f"current -> slots/{target}")

        reasons: list[str] = []
        health = None
        if skip_health:
            step("health-check", "skipped")
        else:
            check = health_check or runtime_health_check(config.health)
            try:
                health = check(load_bundle(layout.current))
                reasons += [f"health check: {r}" for r in health.reasons] if not health.ok else []
            except (BundleError, InstallError) as e:
                reasons.append(f"health check: {e}")
            except Exception as e:  # a user's model may fail in any way; it must not skip the rollback
                reasons.append(f"health check crashed: {type(e).__name__}: {e}")
            step("health-check", "passed" if not reasons else "; ".join(reasons))

        if not reasons and service is not None:
            reasons += _service_up(service, config)
            step("service", "healthy" if not reasons else reasons[-1])

        if reasons:
            return _roll_back(layout, config, service, target, previous, reasons, steps, step, health)

        state = replace(read_state(layout), active=target, previous=previous, trial=None)
        write_state(layout, state.with_event("installed", slot=target, source=details["source"]))
        step("confirm", f"slot {target} active")
        return InstallResult(True, target, target, previous, False, (), tuple(steps), health)


def _check_signature(bundle: Bundle, config: DeployConfig, verifier: SignatureVerifier | None) -> None:
    if not config.bundle_public_key:
        return
    key = Path(config.bundle_public_key)
    if not key.is_file():
        raise InstallError(f"deploy.bundle_public_key: {key} does not exist; copy the public key there or unset it")
    verify = verifier or find_signature_verifier()
    if verify is None:
        raise InstallError(
            f"deploy.bundle_public_key is set ({key}) but this dreamlink cannot verify bundle signatures yet; "
            "refusing to install an unverified bundle. Upgrade dreamlink, or unset the key to accept unsigned bundles"
        )
    try:
        verify(bundle, key)
    except BundleError as e:
        raise InstallError(f"refused: bundle signature does not verify against {key} ({e})") from None


def _service_up(service: ServiceControl, config: DeployConfig) -> list[str]:
    try:
        service.restart()
        report = service.wait_healthy(config.health.service_timeout_s, config.health.service_settle_s)
    except Exception as e:  # systemctl missing, unit unknown: the new model never ran, so do not keep it
        return [f"service: {type(e).__name__}: {e}"]
    return [] if report.healthy else [f"service: {report.detail}"]


def _roll_back(
    layout: SlotLayout,
    config: DeployConfig,
    service: ServiceControl | None,
    target: str,
    previous: str | None,
    reasons: list[str],
    steps: list[str],
    step: Callable[[str, str], None],
    health: Any,
) -> InstallResult:
    why = "; ".join(reasons)
    log.error("install-bundle: slot %s failed (%s); rolling back", target, why)
    state = read_state(layout)
    if previous is not None and slot_is_valid(layout, previous):
        switch_to(layout, previous)
        active: str | None = previous
    else:
        # Nothing to go back to: fly nothing rather than a model that failed its check.
        layout.current.unlink(missing_ok=True)
        fsync_dir(layout.root)
        active = None
    state = replace(state, active=active, previous=target, trial=None)
    write_state(layout, state.with_event("rollback", slot=target, to=active, reason=why))
    step("rollback", f"current -> slots/{active}" if active else "no previous slot; current removed")
    if service is not None and active is not None:
        back = _service_up(service, config)
        step("rollback-service", "old model running" if not back else back[0])
        reasons = reasons + [f"after rollback: {r}" for r in back]
    return InstallResult(False, active, target, previous, True, tuple(reasons), tuple(steps), health)
