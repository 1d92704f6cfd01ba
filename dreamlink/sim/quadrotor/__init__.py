"""Quadrotor SITL: a simulated flight controller (ArduCopter or PX4 behaviour) on MAVLink over UDP.

- `physics`: rotorpy aerodynamics integrated in NED/FRD (`QuadParams`, `QuadPhysics`, seeded `DrydenWind`).
- `controller`: the autopilot's cascaded position/velocity/attitude/rate controller and mixer.
- `setpoints`: pure decoding of SET_POSITION_TARGET / SET_ATTITUDE_TARGET type masks.
- `modes`: mode numbers and HEARTBEAT fields of both families.
- `autopilot` (shared), `ardupilot`, `px4`: arming, modes, setpoints, timeouts, failsafes, land detection.
- `randomisation`: `DomainParams`, `sample(rng, ranges)`.
- `vehicle`: `SimVehicle`, physics + controller + autopilot on one clock, no transport.
- `mavlink_io`: `MavlinkFace`, the MAVLink side (commands, stream schedule, latency, signing).
- `telemetry`: what each telemetry message says (the noisy estimate, estimator health, home).
- `process`: the UDP process, `main(argv)` (on `dreamlink.sim.udp_process`, as the motor board).

Nothing is imported here: rotorpy (and through it torch) loads only when a submodule is used.
"""
