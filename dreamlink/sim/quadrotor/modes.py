"""Mode numbers and HEARTBEAT fields of the two autopilot families, as pure tables and functions.

ArduCopter: HEARTBEAT.custom_mode is the copter mode number (ArduCopter/mode.h `Mode::Number`); base_mode is
computed in GCS_MAVLINK_Copter::base_mode() (ArduCopter/GCS_MAVLink_Copter.cpp): STABILIZE_ENABLED |
MANUAL_INPUT_ENABLED | CUSTOM_MODE_ENABLED always, GUIDED_ENABLED while the horizontal position controller
runs, SAFETY_ARMED when armed. The real log shows 81 (STABILIZE, disarmed), 89 (GUIDED, disarmed), 217
(GUIDED / LAND, armed).

PX4: custom_mode packs `union px4_custom_mode { struct { uint16_t reserved; uint8_t main_mode; uint8_t
sub_mode; }; uint32_t data; }` (src/modules/commander/px4_custom_mode.h): main mode in bits 16-23, sub mode
in bits 24-31. The real PX4 1.16 log shows 0x03040000 (AUTO.LOITER, base_mode 29), 0x00060000 (OFFBOARD,
base_mode 17 / 145 armed) and 0x06040000 (AUTO.LAND, 157 armed). MAV_CMD_DO_SET_MODE carries the *unpacked*
numbers: param2 = main mode, param3 = sub mode (Commander.cpp casts both to uint8).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

MAV_MODE_FLAG_CUSTOM_MODE_ENABLED = 1
MAV_MODE_FLAG_AUTO_ENABLED = 4
MAV_MODE_FLAG_GUIDED_ENABLED = 8
MAV_MODE_FLAG_STABILIZE_ENABLED = 16
MAV_MODE_FLAG_MANUAL_INPUT_ENABLED = 64
MAV_MODE_FLAG_SAFETY_ARMED = 128

FLAVOURS = ("ardupilot", "px4")


class CopterMode(IntEnum):
    """ArduCopter flight mode numbers (ArduCopter/mode.h)."""

    STABILIZE = 0
    ACRO = 1
    ALT_HOLD = 2
    AUTO = 3
    GUIDED = 4
    LOITER = 5
    RTL = 6
    CIRCLE = 7
    LAND = 9
    DRIFT = 11
    SPORT = 13
    FLIP = 14
    AUTOTUNE = 15
    POSHOLD = 16
    BRAKE = 17
    THROW = 18
    AVOID_ADSB = 19
    GUIDED_NOGPS = 20
    SMART_RTL = 21


# Modes this SITL flies (others are refused like a mode whose init fails).
COPTER_SIMULATED = frozenset({CopterMode.STABILIZE, CopterMode.ALT_HOLD, CopterMode.GUIDED, CopterMode.LOITER,
                              CopterMode.RTL, CopterMode.LAND, CopterMode.POSHOLD, CopterMode.BRAKE})
# Mode::requires_GPS() true: switching needs a position estimate ("Mode change to X failed: requires position").
COPTER_REQUIRES_POSITION = frozenset({CopterMode.GUIDED, CopterMode.LOITER, CopterMode.RTL, CopterMode.POSHOLD,
                                      CopterMode.BRAKE, CopterMode.AUTO, CopterMode.CIRCLE, CopterMode.SMART_RTL})
# Mode::allows_arming() false for these ("Arm: Mode not armable").
COPTER_NOT_ARMABLE = frozenset({CopterMode.RTL, CopterMode.LAND, CopterMode.BRAKE, CopterMode.CIRCLE,
                                CopterMode.SMART_RTL, CopterMode.AVOID_ADSB, CopterMode.AUTOTUNE})
# The horizontal position controller runs in these (base_mode GUIDED_ENABLED).
COPTER_POSITION_CONTROLLED = frozenset({CopterMode.GUIDED, CopterMode.LOITER, CopterMode.RTL, CopterMode.LAND,
                                        CopterMode.POSHOLD, CopterMode.BRAKE})


def copter_base_mode(mode: int, armed: bool) -> int:
    base = MAV_MODE_FLAG_STABILIZE_ENABLED | MAV_MODE_FLAG_MANUAL_INPUT_ENABLED | MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
    if mode in COPTER_POSITION_CONTROLLED:
        base |= MAV_MODE_FLAG_GUIDED_ENABLED
    if armed:
        base |= MAV_MODE_FLAG_SAFETY_ARMED
    return base


def copter_mode_name(mode: int) -> str:
    try:
        return CopterMode(mode).name
    except ValueError:
        return f"mode {mode}"


class Px4Main(IntEnum):
    MANUAL = 1
    ALTCTL = 2
    POSCTL = 3
    AUTO = 4
    ACRO = 5
    OFFBOARD = 6
    STABILIZED = 7


class Px4AutoSub(IntEnum):
    READY = 1
    TAKEOFF = 2
    LOITER = 3
    MISSION = 4
    RTL = 5
    LAND = 6
    FOLLOW_TARGET = 8
    PRECLAND = 9


@dataclass(frozen=True)
class Px4Mode:
    """A PX4 navigation state: its main/sub mode and the name PX4 prints (mode_util::nav_state_names)."""

    main: int
    sub: int
    name: str

    @property
    def custom_mode(self) -> int:
        return px4_custom_mode(self.main, self.sub)


PX4_MANUAL = Px4Mode(Px4Main.MANUAL, 0, "Manual")
PX4_ALTCTL = Px4Mode(Px4Main.ALTCTL, 0, "Altitude")
PX4_POSCTL = Px4Mode(Px4Main.POSCTL, 0, "Position")
PX4_ACRO = Px4Mode(Px4Main.ACRO, 0, "Acro")
PX4_STAB = Px4Mode(Px4Main.STABILIZED, 0, "Stabilized")
PX4_OFFBOARD = Px4Mode(Px4Main.OFFBOARD, 0, "Offboard")
PX4_TAKEOFF = Px4Mode(Px4Main.AUTO, Px4AutoSub.TAKEOFF, "Takeoff")
PX4_LOITER = Px4Mode(Px4Main.AUTO, Px4AutoSub.LOITER, "Hold")
PX4_MISSION = Px4Mode(Px4Main.AUTO, Px4AutoSub.MISSION, "Mission")
PX4_RTL = Px4Mode(Px4Main.AUTO, Px4AutoSub.RTL, "Return")
PX4_LAND = Px4Mode(Px4Main.AUTO, Px4AutoSub.LAND, "Land")
PX4_FOLLOW = Px4Mode(Px4Main.AUTO, Px4AutoSub.FOLLOW_TARGET, "Follow Target")
PX4_PRECLAND = Px4Mode(Px4Main.AUTO, Px4AutoSub.PRECLAND, "Precision Land")

# Need manual control input (RC or MANUAL_CONTROL), which this SITL never has: they cannot run.
PX4_NEEDS_MANUAL = frozenset({PX4_MANUAL, PX4_ALTCTL, PX4_POSCTL, PX4_ACRO, PX4_STAB})
# HealthAndArmingChecks::modePreventsArming: arming is refused in these.
PX4_PREVENTS_ARMING = frozenset({PX4_LAND, PX4_RTL, PX4_PRECLAND})


def px4_custom_mode(main: int, sub: int = 0) -> int:
    """Pack PX4's main/sub mode into HEARTBEAT.custom_mode (main in bits 16-23, sub in bits 24-31)."""
    if not (0 <= main <= 255 and 0 <= sub <= 255):
        raise ValueError(f"px4_custom_mode: main and sub must be 0..255, got {main}, {sub}")
    return (sub << 24) | (main << 16)


def px4_split_custom_mode(custom_mode: int) -> tuple[int, int]:
    """HEARTBEAT.custom_mode -> (main, sub)."""
    return (custom_mode >> 16) & 0xFF, (custom_mode >> 24) & 0xFF


def px4_mode_from_command(base_mode: int, main: int, sub: int) -> Px4Mode | None:
    """The navigation state DO_SET_MODE asks for (Commander.cpp VEHICLE_CMD_DO_SET_MODE), or None when the
    numbers match no branch (PX4 then answers ACCEPTED and changes nothing)."""
    if not base_mode & MAV_MODE_FLAG_CUSTOM_MODE_ENABLED:
        if base_mode & MAV_MODE_FLAG_AUTO_ENABLED:
            return PX4_MISSION
        if base_mode & MAV_MODE_FLAG_MANUAL_INPUT_ENABLED:
            if base_mode & MAV_MODE_FLAG_GUIDED_ENABLED:
                return PX4_POSCTL
            return PX4_STAB if base_mode & MAV_MODE_FLAG_STABILIZE_ENABLED else PX4_MANUAL
        return None
    if main == Px4Main.AUTO:
        subs = {Px4AutoSub.LOITER: PX4_LOITER, Px4AutoSub.MISSION: PX4_MISSION, Px4AutoSub.RTL: PX4_RTL,
                Px4AutoSub.TAKEOFF: PX4_TAKEOFF, Px4AutoSub.LAND: PX4_LAND,
                Px4AutoSub.FOLLOW_TARGET: PX4_FOLLOW, Px4AutoSub.PRECLAND: PX4_PRECLAND}
        return subs.get(sub, PX4_MISSION if sub == 0 else None)  # type: ignore[call-overload]
    return {Px4Main.MANUAL: PX4_MANUAL, Px4Main.ALTCTL: PX4_ALTCTL, Px4Main.POSCTL: PX4_POSCTL,
            Px4Main.ACRO: PX4_ACRO, Px4Main.STABILIZED: PX4_STAB, Px4Main.OFFBOARD: PX4_OFFBOARD}.get(main)  # type: ignore[call-overload]


def px4_base_mode(mode: Px4Mode, armed: bool) -> int:
    """base_mode as PX4's HEARTBEAT stream fills it (the AUTO and OFFBOARD values are the ones in the log)."""
    base = MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
    if mode.main == Px4Main.AUTO:
        base |= MAV_MODE_FLAG_AUTO_ENABLED | MAV_MODE_FLAG_GUIDED_ENABLED | MAV_MODE_FLAG_STABILIZE_ENABLED
    elif mode.main == Px4Main.OFFBOARD:
        base |= MAV_MODE_FLAG_STABILIZE_ENABLED
    elif mode.main == Px4Main.POSCTL:
        base |= MAV_MODE_FLAG_MANUAL_INPUT_ENABLED | MAV_MODE_FLAG_STABILIZE_ENABLED | MAV_MODE_FLAG_GUIDED_ENABLED
    elif mode.main in (Px4Main.ALTCTL, Px4Main.STABILIZED):
        base |= MAV_MODE_FLAG_MANUAL_INPUT_ENABLED | MAV_MODE_FLAG_STABILIZE_ENABLED
    else:
        base |= MAV_MODE_FLAG_MANUAL_INPUT_ENABLED
    if armed:
        base |= MAV_MODE_FLAG_SAFETY_ARMED
    return base
