#!/usr/bin/env bash
# make image-test: build a real Debian root filesystem (debootstrap), put the dreamlink overlay and the
# built wheel into it the way the pi-gen stage does, and inside it (chroot) run setup-rootfs.sh,
# `systemd-analyze verify` on the unit, install-bundle with the runtime's health check, `dreamlink doctor`,
# and the unit's own ExecStart as the service user against a SITL vehicle, with a NOTIFY_SOCKET listening
# for READY=1. Needs root (debootstrap, chroot, mount). Too slow for `make test`.
#
#   sudo make image-test                     # first run builds the cached debootstrap tarball
#   IMAGE_TEST_DIR=/var/tmp/dl make image-test
#   BUNDLE=runs/demo-cartpole/bundle make image-test    # fly a trained bundle instead of the tiny linear one
set -euo pipefail

ARCH=$(dpkg --print-architecture)
WORK=${IMAGE_TEST_DIR:-/tmp/dreamlink-image-test}
TICKS=${TICKS:-150}
. "$(dirname "$0")/image-lib.sh"
image_init

image_rootfs

phase "host: build the dreamlink wheel, fetch onboard dependencies (numpy, onnxruntime, pymavlink)"
image_wheel
mkdir -p "$CACHE/wheels"
"$PY" -m pip download -q --only-binary=:all: -d "$CACHE/wheels" "$WHEEL"
rm -f "$CACHE"/wheels/dreamlink-*.whl
ls "$CACHE/wheels"

phase "host: test bundle"
if [ -z "${BUNDLE:-}" ]; then
    BUNDLE=$WORK/bundle
    rm -rf "$BUNDLE" "$BUNDLE.onnx"
    PYTHONPATH="$REPO/tests" "$PY" - "$BUNDLE" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from onnx_models import linear_world_model
from dreamlink.bundle import write_bundle
from dreamlink.spec import CARTPOLE
out = Path(sys.argv[1])
F = np.eye(4, dtype=np.float32); F[0, 1] = F[2, 3] = 0.02
G = np.zeros((4, 1), np.float32); G[1, 0] = G[3, 0] = 0.02
model = linear_world_model(out.parent / "bundle.onnx", F, G)
write_bundle(out, CARTPOLE, {"world_model": (model, {"opset": 17})})
print("wrote", out)
EOF
fi
# A bundle that verifies but fails the health check (its model outputs NaN): must be rolled back.
rm -rf "$WORK/bad-bundle" "$WORK/bad-bundle.onnx"
PYTHONPATH="$REPO/tests" "$PY" - "$WORK/bad-bundle" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from onnx_models import linear_world_model
from dreamlink.bundle import write_bundle
from dreamlink.spec import CARTPOLE
out = Path(sys.argv[1])
model = linear_world_model(out.parent / "bad-bundle.onnx", np.eye(4, dtype=np.float32), np.zeros((4, 1), np.float32),
                           bias=np.full(4, np.nan, np.float32))
write_bundle(out, CARTPOLE, {"world_model": (model, {"opset": 17})})
print("wrote", out, "(NaN model)")
EOF

phase "host: dreamlink deploy -> overlay (+ pi-gen stage), copied in as pi-gen's 00-run.sh does"
cat > "$WORK/dreamlink.toml" <<'EOF'
# image-test device config: the runtime listens for the SITL vehicle on loopback.
[deploy]
connect = "udpin:127.0.0.1:14550"

[deploy.health]
ticks = 50
EOF
image_overlay "$CACHE/wheels"
rm -rf "$ROOT/root/bundle" && cp -R "$BUNDLE" "$ROOT/root/bundle"
cp -R "$WORK/bad-bundle" "$ROOT/root/bad-bundle"

# ---------------------------------------------------------------- inside the image
image_setup

phase "chroot: systemd-analyze verify, logrotate --debug"
VERIFY=$(in_root systemd-analyze verify /etc/systemd/system/dreamlink.service 2>&1 | grep dreamlink.service || true)
[ -z "$VERIFY" ] || die "systemd-analyze verify: $VERIFY"
echo "unit verified"
in_root logrotate --debug --state /tmp/logrotate.state /etc/logrotate.d/dreamlink 2>&1 | grep -E "^(error|Handling)" \
    | tee "$WORK/logrotate.out"
! grep -q '^error' "$WORK/logrotate.out" || die "logrotate config"

phase "chroot: install-bundle (verify, A/B slot, the runtime's health check)"
in_root "${DL[@]}" install-bundle /root/bundle --no-service
in_root readlink /var/lib/dreamlink/current

phase "chroot: install-bundle of a bundle that fails the health check -> rolled back"
set +e
in_root "${DL[@]}" install-bundle /root/bad-bundle --no-service
BAD_RC=$?
set -e
[ "$BAD_RC" = 1 ] || die "the NaN bundle was not rejected (exit $BAD_RC)"
[ "$(in_root readlink /var/lib/dreamlink/current)" = "slots/a" ] || die "rollback did not leave slot a active"
echo "rejected and rolled back; current -> $(in_root readlink /var/lib/dreamlink/current) (the flight below flies it)"

phase "chroot: the unit's ExecStartPre (slot recovery before every start), as systemd would run it"
PRE=$(sed -n 's/^ExecStartPre=+//p' "$ROOT/etc/systemd/system/dreamlink.service")
[ -n "$PRE" ] || die "no ExecStartPre in the unit"
if ! in_root "${DL[0]}" --help 2>/dev/null | grep -q install-bundle; then
    PRE=${PRE/$VENV\/bin\/dreamlink /$VENV/bin/python -m dreamlink.deploy }
fi
in_root $PRE

phase "chroot: dreamlink doctor"
set +e
in_root "${DL[@]}" doctor
DOCTOR_RC=$?
set -e
[ "$DOCTOR_RC" = 0 ] || die "doctor reports something that blocks flight (exit $DOCTOR_RC)"

phase "chroot: the unit's ExecStart as user dreamlink, against a SITL vehicle, NOTIFY_SOCKET listening"
HELP=$(in_root $VENV/bin/dreamlink --help 2>&1 || true)
FLIGHT="not run"
if grep -qw run <<<"$HELP" && grep -qw sitl <<<"$HELP"; then
    EXEC=$(sed -n 's/^ExecStart=//p' "$ROOT/etc/systemd/system/dreamlink.service")
    mkdir -p "$ROOT/run/dreamlink-test"
    rm -f "$ROOT/run/dreamlink-test/"*
    ! udp_port_bound 14550 || die "UDP 14550 is already bound (a SITL left running by an earlier run?)"
    bg_start in_root $VENV/bin/python - <<'EOF'
import os, socket, time
path = "/run/dreamlink-test/notify"
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o777)
s.settimeout(1.0)
deadline = time.monotonic() + 180
with open("/run/dreamlink-test/notify.log", "a") as log:
    while time.monotonic() < deadline:
        try:
            log.write(s.recv(4096).decode().replace("\n", " ") + "\n")
            log.flush()
        except socket.timeout:
            pass
EOF
    bg_start in_root $VENV/bin/dreamlink sitl cartpole --out udp:127.0.0.1:14550 > "$WORK/sitl.log" 2>&1
    sleep 1
    set +e
    in_root /bin/sh -c "cd /var/log/dreamlink && exec setpriv --reuid=dreamlink --regid=dreamlink --init-groups \
        env NOTIFY_SOCKET=/run/dreamlink-test/notify timeout 120 $EXEC --ticks $TICKS" 2>&1 | tail -25
    RUN_RC=${PIPESTATUS[0]}
    set -e
    echo "runtime exit code: $RUN_RC"
    echo "sd_notify messages: $(tr '\n' '|' < "$ROOT/run/dreamlink-test/notify.log" 2>/dev/null || echo none)"
    in_root find /var/log/dreamlink -type f -printf '%u:%g %s %p\n' | head
    if [ "$RUN_RC" = 0 ]; then FLIGHT="ok ($TICKS ticks)"; else FLIGHT="failed (exit $RUN_RC)"; fi
    if grep -q READY=1 "$ROOT/run/dreamlink-test/notify.log" 2>/dev/null; then READY=yes; else READY=no; fi
    FLIGHT="$FLIGHT, READY=1 received: $READY"
    bg_stop_all || die "the SITL or the notify listener outlived the flight"
    ! udp_port_bound 14550 || die "UDP 14550 is still bound after the SITL was stopped"
    echo "SITL and notify listener stopped (process groups), UDP 14550 free"
else
    echo "dreamlink run/sitl not in this CLI yet: skipping the SITL flight"
fi

phase "done"
echo "image-test: rootfs $ROOT, doctor ok, rollback ok, SITL flight: $FLIGHT, total $(($(date +%s) - T0)) s"
case "$FLIGHT" in failed*|*"READY=1 received: no"*) exit 1 ;; esac
