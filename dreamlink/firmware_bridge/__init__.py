"""The MAVLink side of the vehicle: one `Link` hides pymavlink, one profile per autopilot family.

- `link`: `Link`, `LinkConfig`, `LinkStats`, `LinkError`, `LinkTimeout`, `CommandRefused`.
- `transports`: the UDP, TCP and serial transports under a link, and the connect strings that name them.
- `admission`: which received frames a receiver acts on, drops and counts; the Link and the SITLs share it.
- `motor_board`: `MotorBoardProfile` for the cart-pole motor board (and its SITL).
- `messages`: the pure message functions of the flight-controller profiles: `state_from_messages`,
  `fill_from_local_position`, `velocity_setpoint_fields`, `action_from_setpoint`, `quad_layout`, type_mask constants.
- `autopilot_config`: `AutopilotConfig`, how to talk to one ArduPilot or PX4 flight controller.
- `autopilot_telemetry`: `AutopilotTelemetry`, what the flight controller reports (state, modes, takeover,
  estimator health, reboots).
- `autopilot`: `AutopilotProfile`, the profile base ArduPilot and PX4 share (connect, arm, modes, setpoints),
  and `AutopilotError`.
- `ardupilot`: `ArduPilotCopterProfile` (GUIDED, NAV_TAKEOFF, BRAKE, LAND, RTL), `COPTER_MODES`.
- `px4`: `Px4Profile` (setpoint stream, OFFBOARD, offboard take-off ramp, NAV_LAND), `px4_custom_mode`.
- `tlog`: `read_tlog`, `iter_tlog`, `TlogRecord`, `TlogReport`, `TlogError` for `.tlog` flight logs.

Onboard code: never imports torch. Modules are not imported here so that importing the package
does not touch pymavlink's process-wide dialect choice before `link` sets MAVLink 2.
"""
