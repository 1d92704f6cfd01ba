"""SITL vehicles: separate processes that speak MAVLink on real UDP sockets like the hardware.

- `cartpole_physics`: pure cart-pole dynamics (`CartpoleParams`, `step`).
- `motor_board`: the motor board and its protocol (`MotorBoard`, transport-free); `motor_board_process`:
  the SITL process serving it on UDP (`main(argv)`).
- `udp_process`: what every SITL process shares (link arguments, its UDP socket, run until signalled).
- `launcher`: the process launcher: `LaunchedProcess` (start, wait until ready, always clean up) and
  `SitlProcess`, which starts a SITL and waits for its first heartbeat; tests use it like users do.
- `fault_proxy`: the fault-injecting UDP proxy process (`FaultSpec`, `main(argv)`) between a runtime
  and a SITL; `proxy_launcher`: `FaultProxy` (that process, on the launcher's lifecycle) and
  `SitlBehindProxy` (a SITL behind it).

Nothing is imported here, so `import dreamlink.sim` stays cheap and leaves pymavlink untouched.
"""
