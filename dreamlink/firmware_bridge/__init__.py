"""The MAVLink side of the vehicle: one `Link` hides pymavlink, one profile per autopilot family.

- `link`: `Link`, `LinkConfig`, `LinkStats`, `LinkError`, `LinkTimeout`, `CommandRefused`.
- `motor_board`: `MotorBoardProfile` for the cart-pole motor board (and its SITL).

Onboard code: never imports torch. Modules are not imported here so that importing the package
does not touch pymavlink's process-wide dialect choice before `link` sets MAVLink 2.
"""
