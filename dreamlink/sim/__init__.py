"""SITL vehicles: separate processes that speak MAVLink on real UDP sockets like the hardware.

- `cartpole_physics`: pure cart-pole dynamics (`CartpoleParams`, `step`).
- `motor_board`: the cart-pole motor board SITL process and its protocol (`main(argv)`).
- `launcher`: `SitlProcess`, the context manager that starts a SITL process, waits for its first
  heartbeat and always cleans it up; tests use it like users do.
- `fault_proxy`: the fault-injecting UDP proxy process (`FaultSpec`, `main(argv)`) between a runtime
  and a SITL; `proxy_launcher`: `FaultProxy` (that process) and `SitlBehindProxy` (a SITL behind it).

Nothing is imported here, so `import dreamlink.sim` stays cheap and leaves pymavlink untouched.
"""
