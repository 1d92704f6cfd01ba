"""A/B model slots: two bundle folders and a `current` link that picks one, switched atomically.

Layout under the state folder (default /var/lib/dreamlink)::

    slots/a/ slots/b/      verified bundle copies (only ever written while not active)
    current -> slots/a     what the service loads; the one source of truth for "active"
    state.json             previous slot, a slot on trial, per-slot details, recent history
    .lock                  held by whoever changes slots (install, rollback, recovery)

Invariant: `current` only ever points at a slot that was fully written, fsynced and
verified. The link is replaced in one rename and `state.json` is written with
tmp + fsync + rename + fsync(dir), so a power cut at any instant leaves either the old
slot or the new one active, never a half-written one. A slot switched to but not yet
confirmed healthy is "on trial"; if the installer dies before confirming it, `recover`
(run before the service starts) rolls back to the previous slot.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dreamlink.bundle import Bundle, BundleError, load_bundle
from dreamlink.deploy.durable import fsync_dir, remove_tree_durable, symlink_atomic, write_atomic

log = logging.getLogger(__name__)

SLOTS = ("a", "b")
HISTORY_KEPT = 20


class SlotError(Exception):
    """The slot folder is unusable or locked; the message says what to do."""


class SlotBusy(SlotError):
    """Another process holds the slot lock."""


@dataclass(frozen=True)
class SlotLayout:
    root: Path

    @property
    def slots_dir(self) -> Path:
        return self.root / "slots"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def slot(self, name: str) -> Path:
        if name not in SLOTS:
            raise SlotError(f"unknown slot {name!r}, expected one of {SLOTS}")
        return self.slots_dir / name

    def staging(self, name: str) -> Path:
        return self.slots_dir / f".{name}.staging"


@dataclass(frozen=True)
class SlotState:
    """What `state.json` records beside the link. `active` mirrors the link (for people reading it)."""

    active: str | None = None
    previous: str | None = None
    trial: str | None = None
    slots: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "previous": self.previous,
            "trial": self.trial,
            "slots": self.slots,
            "history": list(self.history),
        }

    def with_event(self, event: str, **detail: Any) -> SlotState:
        entry = {"utc": utc_now(), "event": event, **detail}
        return replace(self, history=(*self.history, entry)[-HISTORY_KEPT:])


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def active_slot(layout: SlotLayout) -> str | None:
    """The slot `current` points at, or None when nothing is installed (or the link is foreign)."""
    try:
        target = os.readlink(layout.current)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.EINVAL:  # a regular file or folder where the link should be
            raise SlotError(f"{layout.current}: expected a symlink to slots/a or slots/b; remove it") from None
        raise
    parts = Path(target).parts
    if len(parts) == 2 and parts[0] == "slots" and parts[1] in SLOTS:
        return parts[1]
    log.warning("%s points at %r, not at a slot; treating the device as having no active slot", layout.current, target)
    return None


def other_slot(name: str | None) -> str:
    return "b" if name == "a" else "a"


def read_state(layout: SlotLayout) -> SlotState:
    """Read state.json; a missing or unreadable one is rebuilt from the link (it is only bookkeeping)."""
    active = active_slot(layout)
    try:
        raw = json.loads(layout.state_file.read_text())
        state = SlotState(
            active=raw.get("active"),
            previous=raw.get("previous"),
            trial=raw.get("trial"),
            slots=dict(raw.get("slots") or {}),
            history=tuple(raw.get("history") or ()),
        )
        for key in ("active", "previous", "trial"):
            if getattr(state, key) not in (None, *SLOTS):
                raise ValueError(f"{key}={getattr(state, key)!r}")
    except FileNotFoundError:
        return SlotState(active=active)
    except (ValueError, TypeError, AttributeError) as e:
        log.warning("%s unreadable (%s); rebuilding it from %s", layout.state_file, e, layout.current)
        return SlotState(active=active)
    return state


def write_state(layout: SlotLayout, state: SlotState) -> None:
    write_atomic(layout.state_file, json.dumps(state.to_dict(), indent=2) + "\n")


def switch_to(layout: SlotLayout, name: str) -> None:
    """Point `current` at slot `name` in one rename, made durable before returning."""
    layout.slot(name)
    symlink_atomic(f"slots/{name}", layout.current)
    log.info("switched %s -> slots/%s", layout.current, name)


def verify_slot(layout: SlotLayout, name: str, check_models: bool = True) -> Bundle:
    return load_bundle(layout.slot(name), check_models=check_models)


def slot_is_valid(layout: SlotLayout, name: str | None) -> bool:
    if name is None or not (layout.slot(name) / "manifest.json").is_file():
        return False
    try:
        verify_slot(layout, name)
    except BundleError as e:
        log.warning("slot %s does not verify: %s", name, e)
        return False
    return True


def prepare(layout: SlotLayout) -> None:
    layout.slots_dir.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def slot_lock(layout: SlotLayout, wait: bool = False) -> Iterator[None]:
    """Hold the slot lock (an flock: the kernel drops it when the holder dies, even by kill -9)."""
    prepare(layout)
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise SlotBusy(f"{layout.lock_file}: another install or rollback is running; wait for it") from None
        yield
    finally:
        os.close(fd)


def _remove_leftovers(layout: SlotLayout) -> None:
    for name in SLOTS:
        if layout.staging(name).exists():
            log.info("removing an interrupted copy %s", layout.staging(name))
            remove_tree_durable(layout.staging(name))
    for tmp in (layout.current.with_name(".current.tmp"), layout.state_file.with_name(".state.json.tmp")):
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


@dataclass(frozen=True)
class Recovery:
    active: str | None
    actions: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def recover(layout: SlotLayout, is_valid: Callable[[SlotLayout, str | None], bool] = slot_is_valid) -> Recovery:
    """Bring the slots back to a consistent state after an interrupted install. Call with the lock held.

    - an unconfirmed slot on trial is rolled back to the previous slot (the installer died
      before its health check passed), when the previous one still verifies;
    - an active slot that no longer verifies is replaced by the other one if that verifies;
    - leftovers of interrupted copies are removed; state.json is made to match the link.
    """
    prepare(layout)
    _remove_leftovers(layout)
    actions: list[str] = []
    state = read_state(layout)
    active = active_slot(layout)
    if state.trial is not None:
        if active == state.trial and state.previous is not None and is_valid(layout, state.previous):
            target = state.previous
            switch_to(layout, target)
            actions.append(f"rolled back unconfirmed slot {active} to {target}")
            state = replace(state, previous=active).with_event("recovered", rolled_back=active, to=target)
            active = target
        elif active != state.trial:
            actions.append(f"dropped interrupted install into slot {state.trial}")
        else:
            actions.append(f"kept unconfirmed slot {active}: no valid previous slot to return to")
        state = replace(state, trial=None)
    if not is_valid(layout, active):
        other = other_slot(active)
        if is_valid(layout, other):
            switch_to(layout, other)
            actions.append(f"active slot {active} does not verify; switched to {other}")
            state = state.with_event("recovered", invalid=active, to=other)
            active = other
        elif active is not None:
            actions.append(f"active slot {active} does not verify and no other slot does; reinstall a bundle")
    if state.active != active:
        state = replace(state, active=active)
    if actions or not layout.state_file.exists():
        write_state(layout, state)
        fsync_dir(layout.root)
    for a in actions:
        log.warning("recovery: %s", a)
    return Recovery(active, tuple(actions))


def rollback(layout: SlotLayout, reason: str) -> str:
    """Switch back to the other slot (it must verify). Call with the lock held. Returns the new active slot."""
    active = active_slot(layout)
    target = other_slot(active)
    if not slot_is_valid(layout, target):
        raise SlotError(f"cannot roll back: slot {target} holds no valid bundle; install one with install-bundle")
    switch_to(layout, target)
    state = read_state(layout)
    state = replace(state, active=target, previous=active, trial=None).with_event(
        "rollback", slot=active, to=target, reason=reason
    )
    write_state(layout, state)
    return target
