"""The MAVLink side of the vehicle: one `Link` hides pymavlink, one profile per autopilot family.

- `link`: `Link`, `LinkConfig`, `LinkStats`, `LinkError`, `LinkTimeout`, `CommandRefused`.
- `transports`: the UDP, TCP and serial transports under a link, and the connect strings that name them.
- `admission`: which received frames a receiver acts on, drops and counts; the Link and the SITLs share it.
- `motor_board`: `MotorBoardProfile` for the cart-pole motor board (and its SITL).
- `autopilot`: what the flight-controller profiles share: `AutopilotConfig`, `AutopilotError`, the pure
  `state_from_messages`, `velocity_setpoint_fields`, `action_from_setpoint`, `quad_layout`, type_mask constants.
- `ardupilot`: `ArduPilotCopterProfile` (GUIDED, NAV_TAKEOFF, BRAKE, LAND, RTL), `COPTER_MODES`.
- `px4`: `Px4Profile` (setpoint stream, OFFBOARD, offboard take-off ramp, NAV_LAND), `px4_custom_mode`.
- `tlog`: `read_tlog`, `iter_tlog`, `TlogRecord`, `TlogReport`, `TlogError` for `.tlog` flight logs.

Onboard code: never imports torch. Modules are not imported here so that importing the package
does not touch pymavlink's process-wide dialect choice before `link` sets MAVLink 2.
"""
