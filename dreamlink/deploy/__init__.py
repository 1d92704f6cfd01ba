"""Field deployment: from a bundle to a flashed image, and model updates on the device.

config.py    the `[deploy]` tables of /etc/dreamlink/dreamlink.toml, validated
overlay.py   the root-filesystem overlay (systemd unit, sysusers, tmpfiles, logrotate), pi-gen stage, Jetson notes
slots.py     A/B model slots, the atomic `current` switch, recovery after a power cut
install.py   install-bundle: verify, copy, switch, health check, roll back
doctor.py    is this device ready to fly, and what to fix
sdnotify.py  READY=1 / WATCHDOG=1 to systemd, standard library only
wheels.py    do the onboard dependencies resolve to binary wheels for a board (aarch64) and Python?
"""
