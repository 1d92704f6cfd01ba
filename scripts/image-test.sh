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

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
WORK=${IMAGE_TEST_DIR:-/tmp/dreamlink-image-test}
SUITE=${SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ARCH=$(dpkg --print-architecture)
PACKAGES=python3,python3-venv,systemd,logrotate,ca-certificates
CACHE=$WORK/cache
KEY=$(echo "$SUITE $ARCH $PACKAGES $MIRROR" | sha256sum | cut -c1-8)
TARBALL=$CACHE/debootstrap-$SUITE-$ARCH-$KEY.tgz
ROOTFS_TAR=$CACHE/rootfs-$SUITE-$ARCH-$KEY.tar
ROOT=$WORK/rootfs
TICKS=${TICKS:-150}
VENV=/opt/dreamlink/venv

T0=$(date +%s)
phase() { echo; echo "== [$(($(date +%s) - T0)) s] $*"; }
die() { echo "image-test: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || { echo "image-test needs root (debootstrap, chroot, mount): sudo make image-test"; exit 2; }
command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
mkdir -p "$CACHE/wheels" "$WORK"

unmount_all() {
    for m in sys proc; do
        if mountpoint -q "$ROOT/$m"; then umount -l "$ROOT/$m"; fi
    done
}
BG_PIDS=()
cleanup() {
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    unmount_all
}
trap cleanup EXIT

# ---------------------------------------------------------------- root filesystem
phase "debootstrap $SUITE/$ARCH minbase + $PACKAGES"
if [ ! -f "$TARBALL" ]; then
    rm -rf "$WORK/tarball-work"
    debootstrap --variant=minbase --include="$PACKAGES" --make-tarball="$TARBALL.part" \
        "$SUITE" "$WORK/tarball-work" "$MIRROR"
    mv "$TARBALL.part" "$TARBALL"
    rm -rf "$WORK/tarball-work"
    echo "cached $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
    echo "using cached $TARBALL"
fi
unmount_all
if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then die "something is still mounted under $ROOT"; fi
rm -rf "$ROOT"
# --unpack-tarball saves the downloads but still runs dpkg for every package (~50 s here); the pristine
# root filesystem it produces is cached too, so reruns only untar it.
if [ -f "$ROOTFS_TAR" ] && [ "$ROOTFS_TAR" -nt "$TARBALL" ]; then
    mkdir -p "$ROOT" && tar -C "$ROOT" --numeric-owner -xpf "$ROOTFS_TAR"
    echo "unpacked cached $ROOTFS_TAR"
else
    debootstrap --variant=minbase --include="$PACKAGES" --unpack-tarball="$TARBALL" "$SUITE" "$ROOT" "$MIRROR" \
        > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; die "debootstrap"; }
    tar -C "$ROOT" --numeric-owner -cpf "$ROOTFS_TAR.part" . && mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
fi
echo "rootfs: $ROOT ($(du -sh "$ROOT" | cut -f1)), $(chroot "$ROOT" python3 --version)"

# ---------------------------------------------------------------- host side: wheel, deps, bundle, overlay
phase "host: build the dreamlink wheel, fetch onboard dependencies (numpy, onnxruntime, pymavlink)"
rm -rf "$WORK/wheels" "$WORK/src" && mkdir -p "$WORK/wheels" "$WORK/src"
# Built from a copy: setuptools leaves build/ scratch folders in the tree it builds.
tar -C "$REPO" --exclude=./.venv --exclude=./runs --exclude=./build --exclude='*.egg-info' --exclude=.git -cf - . \
    | tar -C "$WORK/src" -xf -
"$PY" -m pip wheel "$WORK/src" --no-deps -q -w "$WORK/wheels"
WHEEL=$(ls "$WORK"/wheels/dreamlink-*.whl)
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
rm -rf "$WORK/overlay" "$WORK/pi-gen"
"$PY" -m dreamlink.deploy deploy --root "$WORK/overlay" --config "$WORK/dreamlink.toml" --wheel "$WHEEL" \
    --pi-gen "$WORK/pi-gen"
cp -R --preserve=mode,timestamps,links --no-preserve=ownership "$WORK/overlay/." "$ROOT/"
cp "$CACHE"/wheels/*.whl "$ROOT/opt/dreamlink/wheels/"
rm -rf "$ROOT/root/bundle" && cp -R "$BUNDLE" "$ROOT/root/bundle"
cp -R "$WORK/bad-bundle" "$ROOT/root/bad-bundle"

mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
in_root() { chroot "$ROOT" "$@"; }

# ---------------------------------------------------------------- inside the image
phase "chroot: setup-rootfs.sh (venv + wheel offline, sysusers, tmpfiles)"
in_root env DREAMLINK_PIP_ARGS=--no-index /usr/lib/dreamlink/setup-rootfs.sh
in_root id dreamlink
in_root stat -c '%A %U:%G %n' /var/lib/dreamlink /var/lib/dreamlink/slots /var/log/dreamlink

phase "chroot: systemd-analyze verify, logrotate --debug"
VERIFY=$(in_root systemd-analyze verify /etc/systemd/system/dreamlink.service 2>&1 | grep dreamlink.service || true)
[ -z "$VERIFY" ] || die "systemd-analyze verify: $VERIFY"
echo "unit verified"
in_root logrotate --debug --state /tmp/logrotate.state /etc/logrotate.d/dreamlink 2>&1 | grep -E "^(error|Handling)" \
    | tee "$WORK/logrotate.out"
! grep -q '^error' "$WORK/logrotate.out" || die "logrotate config"

DL=(/opt/dreamlink/venv/bin/dreamlink)
if ! in_root "${DL[@]}" --help 2>/dev/null | grep -q install-bundle; then
    echo "note: this dreamlink CLI has no deploy subcommands yet; using python -m dreamlink.deploy"
    DL=($VENV/bin/python -m dreamlink.deploy)
fi

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
    in_root $VENV/bin/python - <<'EOF' &
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
    BG_PIDS+=($!)
    in_root $VENV/bin/dreamlink sitl cartpole --out udp:127.0.0.1:14550 > "$WORK/sitl.log" 2>&1 &
    BG_PIDS+=($!)
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
else
    echo "dreamlink run/sitl not in this CLI yet: skipping the SITL flight"
fi

phase "done"
echo "image-test: rootfs $ROOT, doctor ok, rollback ok, SITL flight: $FLIGHT, total $(($(date +%s) - T0)) s"
case "$FLIGHT" in failed*|*"READY=1 received: no"*) exit 1 ;; esac
