"""SITL vehicles: separate processes that speak MAVLink on real UDP sockets like the hardware.

- `cartpole_physics`: pure cart-pole dynamics (`CartpoleParams`, `step`).
- `motor_board`: the cart-pole motor board SITL process and its protocol (`main(argv)`).
- `launcher`: `SitlProcess`, the context manager that starts a SITL process, waits for its first
  heartbeat and always cleans it up; tests use it like users do.

Nothing is imported here, so `import dreamlink.sim` stays cheap and leaves pymavlink untouched.
"""
