"""The fixed-rate control loop: read state, plan, shield, send, record, sleep to the deadline.

`ControlLoop.tick` is the control tick of DESIGN.md, top to bottom. The loop owns what
carries between ticks (the previous plan, counters); the planner and the shield are
functions of their inputs. Fallback chain when planning fails or is unusable: the distilled
policy (when the bundle has one and the state is fresh), the shifted previous plan, then the hold
action. Every fallback is counted and logged as an event. Samples whose imagined future was not
finite are left out by the planner and counted here (`nonfinite_samples_total`); only a tick with no
finite sample at all falls back (`all_samples_nonfinite`). With a policy, a share of each tick's
samples is also seeded from it (`PolicySession.prior`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dreamlink.runtime.clock import Clock
from dreamlink.runtime.mppi import MppiPlanner, Plan, shift_plan
from dreamlink.runtime.policy import PolicySession
from dreamlink.runtime.recorder import FlightRecorder
from dreamlink.runtime.shield import ShieldLimits, shield

log = logging.getLogger(__name__)

# Where a tick's action came from (recorded per tick as a small integer).
SOURCE_PLAN, SOURCE_PREVIOUS_PLAN, SOURCE_HOLD, SOURCE_POLICY = 0, 1, 2, 3
SOURCE_NAMES = {SOURCE_PLAN: "plan", SOURCE_PREVIOUS_PLAN: "previous_plan", SOURCE_HOLD: "hold",
                SOURCE_POLICY: "policy"}
LOCKSTEP_WALL_GRACE_S = 2.0
# At the loop's end a failsafe request in flight gets this long to finish before the caller lands the
# vehicle: two refused modes at ~3.5 s each on a bad link, and a margin.
FAILSAFE_REQUEST_WAIT_S = 10.0
# Ticks with non-finite samples are logged as one event at the first and then at most one per interval, carrying
# the counts since the last: a model that returns NaN somewhere may do so every tick, and 50 events a second
# would drown the log (the totals are in the stats).
NONFINITE_EVENT_INTERVAL_S = 1.0


class Profile(Protocol):
    """What the loop needs of a vehicle profile (firmware_bridge implements it)."""

    def state(self) -> tuple[float, np.ndarray, float]: ...

    def send(self, action: np.ndarray) -> None: ...

    def emergency_stop(self) -> None: ...


@dataclass(frozen=True)
class LoopConfig:
    rate_hz: float = 50.0
    stale_limit_s: float = 0.1  # older telemetry is not planned on
    max_plan_latency_s: float = 0.0  # 0: two control periods; a slower plan is not used
    disagreement_limit: float = float("inf")  # ensemble spread (state-range units) past which a plan is distrusted
    failsafe_after_s: float = 1.0  # stale telemetry this long: ask for the vehicle's own failsafe
    # A pilot or ground station switched the vehicle out of the control mode: "end" the flight at once, or
    # "wait" (planning nothing, sending nothing) until they hand it back by choosing the control mode again.
    on_takeover: str = "end"

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def plan_latency_limit_s(self) -> float:
        return self.max_plan_latency_s if self.max_plan_latency_s > 0 else 2.0 * self.period_s


@dataclass
class LoopCounters:
    """Mutable counters owned by the loop; `LoopStats` is their frozen summary."""

    ticks: int = 0
    overruns: int = 0  # tick work ended after the next deadline
    missed_deadlines: int = 0  # deadlines skipped because of overruns
    stale_ticks: int = 0
    failsafes: int = 0
    estops: int = 0
    shield_clipped: int = 0
    shield_nonfinite: int = 0
    shield_fenced: int = 0
    shield_zoned: int = 0  # setpoints replaced because their lookahead entered a keep-out zone
    nonfinite_samples_total: int = 0  # samples left out of the weights because the model's future was not finite
    ticks_with_nonfinite: int = 0
    shield_changed_ticks: int = 0  # ticks whose sent action differs from the one asked for (clip, NaN, fence, slew)
    takeover_ticks: int = 0  # ticks a pilot or ground station had the vehicle (nothing sent)
    fallbacks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LoopStats:
    ticks: int
    duration_s: float
    achieved_rate_hz: float
    plan_latency_p50_ms: float
    plan_latency_p99_ms: float
    plan_latency_max_ms: float
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    overruns: int
    missed_deadlines: int
    stale_ticks: int
    failsafes: int
    estops: int
    shield_clipped: int
    shield_nonfinite: int
    shield_fenced: int
    fallbacks: dict[str, int]
    shield_zoned: int = 0
    nonfinite_samples_total: int = 0
    ticks_with_nonfinite: int = 0
    shield_changed_ticks: int = 0
    takeover_ticks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pct(x: np.ndarray, q: float) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q) * 1e3) if len(x) else float("nan")


class ControlLoop:
    def __init__(
        self,
        profile: Profile,
        planner: MppiPlanner,
        limits: ShieldLimits,
        clock: Clock,
        config: LoopConfig,
        recorder: FlightRecorder | None = None,
        reference: Callable[[float], np.ndarray] | None = None,
        estop: threading.Event | None = None,
        failsafe: Callable[[], object] | None = None,
        policy: PolicySession | None = None,
    ) -> None:
        """`reference(t_s) -> [H,S]` is the tracking target over the horizon from `t_s` (None: fixed task);
        `estop` set (by the ground station listener) ends the flight with the motors stopped at the next
        tick; `failsafe()` asks the vehicle for its own failsafe when telemetry stays stale; `policy`, the
        distilled policy: first fallback and sampling prior."""
        self.profile, self.planner, self.limits, self.clock = profile, planner, limits, clock
        self.reference = reference
        self.estop = estop
        self.failsafe = failsafe
        self.policy = policy
        task = getattr(planner, "task", None)  # the policy's target on a fixed task
        self._fixed_target = np.asarray(task.target if task is not None else (), dtype=np.float32)
        self.stopped_by_estop = False
        self.stopped_by_takeover = False
        self._taken_mode: str | None = None  # the mode a pilot took the vehicle into, while they have it
        self._stale_since: float | None = None
        self._failsafe_request: threading.Thread | None = None
        # In lockstep the vehicle waits for us: a slow plan is late on the wall clock only, so it is counted
        # (an overrun) but still flown, and a flight reproduces from its seed whatever the machine's load.
        self._paced_by_vehicle = bool(getattr(clock, "paced_by_vehicle", False))
        self.config, self.recorder = config, recorder
        self.counters = LoopCounters()
        self.previous: Plan | None = None
        self._warm = planner.initial_plan()
        self._last_sent: np.ndarray | None = None
        self._latency: list[float] = []
        self._lateness: list[float] = []
        self._nonfinite_event_s: float | None = None  # when the last non-finite-samples event was written
        self._nonfinite_unlogged = (0, 0)  # (ticks, samples) since then

    def _fallback(self, reason: str, t_s: float, state: np.ndarray | None = None,
                  ref: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """The policy on a fresh `state` (None: stale, skip it), the shifted previous plan while one is
        usable, then hold."""
        self.counters.fallbacks[reason] = self.counters.fallbacks.get(reason, 0) + 1
        action, source = self._fallback_action(t_s, state, ref)
        if self.recorder:
            self.recorder.event("fallback", t_s, reason=reason, source=SOURCE_NAMES[source])
        return action, source

    def _fallback_action(self, t_s: float, state: np.ndarray | None, ref: np.ndarray | None) -> tuple[np.ndarray, int]:
        if self.policy is not None and state is not None:
            try:
                action = self.policy.act(state, self.policy.target_at(ref, self._fixed_target))
                if np.all(np.isfinite(action)):
                    return action, SOURCE_POLICY
            except Exception as e:  # the policy's session failed too: on down the chain
                log.warning("policy fallback failed: %s", e)
        prev = self.previous
        if prev is not None and t_s - prev.made_at_s < prev.actions.shape[0] * self.config.period_s:
            return prev.action_at(t_s, self.config.period_s), SOURCE_PREVIOUS_PLAN
        return np.asarray(self.limits.hold_action, dtype=np.float32), SOURCE_HOLD

    def tick(self, now_s: float, lateness_s: float) -> np.ndarray:
        """One control tick at `now_s`; returns the action sent."""
        if self.estop is not None and self.estop.is_set():
            return self._emergency_stop(now_s)
        taken = getattr(self.profile, "taken_over", None)
        if taken is not None or self._taken_mode is not None:
            action = self._takeover(now_s, taken)
            if action is not None:
                return action
        t_state, state, age_s = self.profile.state()
        if self._paced_by_vehicle:
            # Lockstep: staleness in vehicle time; wall-clock age only past a grace (a dead link, a dead SITL)
            # so a loaded machine does not turn fresh samples stale and flights reproduce from their seed.
            age_s = max(self.clock.age_of(t_state), age_s - LOCKSTEP_WALL_GRACE_S)  # type: ignore[attr-defined]
        plan: Plan | None = None
        latency_s = float("nan")
        if age_s > self.config.stale_limit_s or not np.all(np.isfinite(state)):
            self.counters.stale_ticks += 1
            action, source = self._fallback("stale_state", now_s)
            self._on_stale(now_s)
        # -- estimator health: the autopilot reports its own state estimate unusable: not planned
        # on, held like stale state, and past failsafe_after_s the vehicle's own failsafe --
        elif not getattr(self.profile, "estimator_ok", True):
            action, source = self._fallback("estimator_unhealthy", now_s)
            self._on_stale(now_s)
        # -- end estimator health --
        else:
            self._stale_since = None
            t0 = time.perf_counter()
            ref = None
            try:
                ref = self.reference(now_s) if self.reference is not None else None
                prior = None
                if self.policy is not None:
                    imagined = self.previous.imagined if self.previous is not None else None
                    prior = self.policy.prior(state, imagined, ref, self._fixed_target, self._warm.shape[0])
                plan = self.planner.plan(state, self._warm, now_s, ref, prior)
            except Exception as e:  # the model or session failed: fly on without it
                log.warning("planner failed: %s", e)
                plan = None
            latency_s = time.perf_counter() - t0
            if plan is not None and plan.nonfinite_samples:
                self._count_nonfinite(now_s, plan)
            if plan is None:
                action, source = self._fallback("planner_error", now_s, state, ref)
            elif not np.all(np.isfinite(plan.actions)):
                reason = "all_samples_nonfinite" if plan.all_samples_nonfinite else "nonfinite_plan"
                plan = None
                action, source = self._fallback(reason, now_s, state, ref)
            elif latency_s > self.config.plan_latency_limit_s and not self._paced_by_vehicle:
                plan = None
                action, source = self._fallback("plan_overrun", now_s, state, ref)
            elif plan.disagreement > self.config.disagreement_limit:
                plan = None
                action, source = self._fallback("model_uncertain", now_s, state, ref)
            else:
                action, source = plan.actions[0], SOURCE_PLAN
        safe = shield(action, self.limits, state, self._last_sent)
        self.counters.shield_clipped += safe.clipped
        self.counters.shield_nonfinite += safe.nonfinite
        self.counters.shield_fenced += safe.fenced
        self.counters.shield_zoned += safe.zoned
        if safe.clipped or safe.nonfinite or safe.fenced:
            self.counters.shield_changed_ticks += 1
        if self.recorder and (safe.nonfinite or safe.fenced):
            self.recorder.event("shield", now_s, nonfinite=safe.nonfinite, fenced=safe.fenced)
        self._last_sent = safe.action
        self.profile.send(safe.action)
        if plan is not None:
            self.previous = plan
            self._warm = shift_plan(plan.actions)
        else:
            self._warm = shift_plan(self._warm)
        if self.recorder:
            imagined = plan.imagined if plan is not None else None
            self.recorder.tick(now_s, state, safe.action, imagined, latency_s, lateness_s, source)
        self.counters.ticks += 1
        self._latency.append(latency_s)
        self._lateness.append(lateness_s)
        return safe.action

    def _count_nonfinite(self, now_s: float, plan: Plan) -> None:
        """Count a tick whose plan left out non-finite samples; an event at the first, then at most one per
        `NONFINITE_EVENT_INTERVAL_S` with the ticks and samples since the last one."""
        self.counters.nonfinite_samples_total += plan.nonfinite_samples
        self.counters.ticks_with_nonfinite += 1
        ticks, samples = self._nonfinite_unlogged
        ticks, samples = ticks + 1, samples + plan.nonfinite_samples
        last = self._nonfinite_event_s
        if last is not None and now_s - last < NONFINITE_EVENT_INTERVAL_S:
            self._nonfinite_unlogged = (ticks, samples)
            return
        if self.recorder:
            self.recorder.event("nonfinite_samples", now_s, samples=plan.nonfinite_samples, of=plan.samples,
                                ticks_since_last=ticks, samples_since_last=samples,
                                samples_total=self.counters.nonfinite_samples_total,
                                ticks_total=self.counters.ticks_with_nonfinite)
        self._nonfinite_event_s = now_s
        self._nonfinite_unlogged = (0, 0)

    def _on_stale(self, now_s: float) -> None:
        """No fresh state: hold (done by the fallback); past `failsafe_after_s`, hand over to the vehicle.

        The request runs on its own thread: it waits for the vehicle's acknowledgements, seconds per mode
        on a link that has gone bad (about 3.5 s each, measured in the telemetry-freeze fault), and the
        loop must keep ticking meanwhile: holding, and answering the e-stop at the next tick."""
        if self._stale_since is None:
            self._stale_since = now_s
        elif self.failsafe is not None and now_s - self._stale_since >= self.config.failsafe_after_s:
            if self._failsafe_request is not None and self._failsafe_request.is_alive():
                return  # the last request is still waiting for the vehicle's answer
            self.counters.failsafes += 1
            if self.recorder:
                self.recorder.event("failsafe", now_s, stale_s=now_s - self._stale_since)
            log.error("telemetry stale for %.2f s: asking the vehicle for its failsafe", now_s - self._stale_since)
            self._failsafe_request = threading.Thread(target=self._request_failsafe, name="failsafe-request",
                                                      daemon=True)
            self._failsafe_request.start()
            self._stale_since = None  # ask again only after another full stale period

    def _request_failsafe(self) -> None:
        assert self.failsafe is not None
        try:
            taken = self.failsafe()
            log.warning("failsafe: the vehicle took %s", taken)
        except Exception as e:
            log.error("failsafe request failed: %s", e)

    def wait_for_failsafe_request(self, timeout_s: float) -> bool:
        """Let a failsafe request in flight finish (True when none is left), so whoever lands the vehicle
        after the loop does not race it."""
        request = self._failsafe_request
        if request is not None:
            request.join(timeout_s)
        return request is None or not request.is_alive()

    def _takeover(self, now_s: float, taken: tuple[str, float] | None) -> np.ndarray | None:
        """A pilot has the vehicle: record it once, send nothing; end the flight ("end") or idle until the control
        mode is chosen again ("wait"), then plan afresh. None: control is back, tick as usual."""
        if taken is None:  # handed back
            if self.recorder:
                self.recorder.event("handed_back", now_s, mode_was=self._taken_mode)
            self._taken_mode, self.previous, self._last_sent = None, None, None
            self._warm = self.planner.initial_plan()
            return None
        if self._taken_mode is None:
            self._taken_mode = taken[0]
            log.warning("taken over into %s: dreamlink stops commanding (%s)", taken[0],
                        "ending the flight" if self.config.on_takeover == "end" else "waiting for the hand-back")
            if self.recorder:
                self.recorder.event("takeover", now_s, mode=taken[0], on_takeover=self.config.on_takeover)
        if self.config.on_takeover == "end":
            self.stopped_by_takeover = True
        self.counters.takeover_ticks += 1
        self.counters.ticks += 1
        self._latency.append(float("nan"))
        self._lateness.append(float("nan"))
        return np.asarray(self.limits.hold_action, dtype=np.float32)

    def _emergency_stop(self, now_s: float) -> np.ndarray:
        """Motors safe now: the profile's e-stop (zero / force-disarm); the loop ends after this tick."""
        hold = np.asarray(self.limits.hold_action, dtype=np.float32)
        if not self.stopped_by_estop:
            self.stopped_by_estop = True
            self.counters.estops += 1
            self.profile.emergency_stop()
            if self.recorder:
                self.recorder.event("estop", now_s)
        self.counters.ticks += 1
        self._latency.append(float("nan"))
        self._lateness.append(float("nan"))
        return hold

    def run(
        self, ticks: int, stop: threading.Event | None = None, on_tick: Callable[[], None] | None = None
    ) -> LoopStats:
        """Run `ticks` ticks (0: until `stop` is set) on the injected clock.

        `on_tick` runs after every tick, on the loop's own thread (e.g. the systemd watchdog: a
        hung loop must stop petting it)."""
        period = self.config.period_s
        paced_by_vehicle = self._paced_by_vehicle
        start = deadline = self.clock.now()
        while (ticks <= 0 or self.counters.ticks < ticks) and not (stop is not None and stop.is_set()):
            if self.stopped_by_estop or self.stopped_by_takeover:
                break
            now = self.clock.now()
            self.tick(now, max(0.0, now - deadline))
            if on_tick is not None:
                on_tick()
            deadline += period
            if paced_by_vehicle:
                if self._latency[-1] > period:  # would have missed its deadline in real time
                    self.counters.overruns += 1
                self.clock.sleep_until(deadline)
                continue
            after = self.clock.now()
            if after > deadline:
                self.counters.overruns += 1
                skipped = int((after - deadline) // period)
                self.counters.missed_deadlines += skipped
                deadline += skipped * period
            self.clock.sleep_until(deadline)
        duration_s = self.clock.now() - start
        if not self.wait_for_failsafe_request(FAILSAFE_REQUEST_WAIT_S):
            log.error("the failsafe request is still unanswered after %.0f s", FAILSAFE_REQUEST_WAIT_S)
        return self.stats(duration_s)

    def stats(self, duration_s: float) -> LoopStats:
        lat, late = np.array(self._latency), np.array(self._lateness)
        c = self.counters
        return LoopStats(
            ticks=c.ticks,
            duration_s=duration_s,
            achieved_rate_hz=c.ticks / duration_s if duration_s > 0 else float("nan"),
            plan_latency_p50_ms=_pct(lat, 50),
            plan_latency_p99_ms=_pct(lat, 99),
            plan_latency_max_ms=_pct(lat, 100),
            lateness_p50_ms=_pct(late, 50),
            lateness_p99_ms=_pct(late, 99),
            lateness_max_ms=_pct(late, 100),
            overruns=c.overruns,
            missed_deadlines=c.missed_deadlines,
            stale_ticks=c.stale_ticks,
            failsafes=c.failsafes,
            estops=c.estops,
            shield_clipped=c.shield_clipped,
            shield_nonfinite=c.shield_nonfinite,
            shield_fenced=c.shield_fenced,
            fallbacks=dict(c.fallbacks),
            shield_zoned=c.shield_zoned,
            nonfinite_samples_total=c.nonfinite_samples_total,
            ticks_with_nonfinite=c.ticks_with_nonfinite,
            shield_changed_ticks=c.shield_changed_ticks,
            takeover_ticks=c.takeover_ticks,
        )
