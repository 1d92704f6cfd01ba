#!/usr/bin/env bash
# make image-test-arm64: the onboard runtime installed and flying inside an arm64 Debian root filesystem.
# No Pi or Jetson here, so the next best real thing: Debian's arm64 packages (debootstrap --arch arm64),
# PyPI's aarch64 wheels and the real dreamlink wheel, run on this x86 host through qemu-user (binfmt_misc).
# Inside the arm64 root (chroot): setup-rootfs.sh from the deployment overlay, no torch and the install
# size under a limit, install-bundle of a trained cart-pole bundle (A/B slot + health check), `dreamlink
# doctor`, and `dreamlink run --lockstep` flying the cart-pole SITL that runs on the host, over UDP on
# 127.0.0.1, for TICKS ticks. Needs root. Timings printed here are the emulator's, not a device's.
#
#   sudo make image-test-arm64          # first run: debootstrap + dpkg under qemu (~6 min), cached after
# The lockstep flight costs ~0.5 s of CPU per tick under qemu (~7 min for 750 ticks on a quiet machine).
#   BUNDLE=runs/demo-cartpole/bundle make image-test-arm64     # fly this bundle instead of training one
#   TICKS=300 SIZE_LIMIT_MB=250 make image-test-arm64
set -euo pipefail

ARCH=arm64
WORK=${IMAGE_TEST_DIR:-/tmp/dreamlink-image-test-arm64}
SUITE=${SUITE:-bookworm}           # Raspberry Pi OS 64-bit is bookworm: python3.11, glibc 2.36
TICKS=${TICKS:-750}                # 15 s at 50 Hz, the demo's flight
BALANCED_MIN=${BALANCED_MIN:-$TICKS}
SIZE_LIMIT_MB=${SIZE_LIMIT_MB:-320}  # the onboard venv (numpy, onnxruntime, pymavlink...), pip included
SITL_PORT=${SITL_PORT:-14560}
if [ "$(uname -m)" != aarch64 ]; then
    # qemu-user 7.2 shows arm64 programs the host's x86 /proc/cpuinfo; with /sys mounted as well, the
    # cpuinfo library inside onnxruntime combines the two into a SIGSEGV at import. Without /sys it gives
    # up with a warning and ONNX Runtime keeps its baseline NEON kernels. (A real board has both, consistent.)
    ROOT_MOUNTS=${ROOT_MOUNTS:-proc}
fi
# The CPU qemu emulates: the Raspberry Pi 5's core (NEON, dotprod, fp16; no i8mm, no SVE). qemu's default
# "max" has features no target board has (SVE, SME, i8mm), so the doctor's report would describe no device.
QEMU_CPU=${QEMU_CPU:-cortex-a76}
. "$(dirname "$0")/image-lib.sh"
ROOT_ENV+=("QEMU_CPU=$QEMU_CPU")
image_init

# ---------------------------------------------------------------- qemu-user
phase "qemu-user for arm64 binaries (binfmt_misc)"
BINFMT=/proc/sys/fs/binfmt_misc
if [ "$(uname -m)" = aarch64 ]; then
    echo "arm64 host: the root filesystem runs natively"
else
    CONF=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$CONF" ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static; }
    [ -e "$BINFMT/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT" \
        || die "cannot mount binfmt_misc at $BINFMT (in a container: run it --privileged, or register qemu on the host)"
    [ -e "$BINFMT/qemu-aarch64" ] || cat "$CONF" > "$BINFMT/register" || die "cannot register $CONF in $BINFMT"
    # An explicit qemu-aarch64-static is not enough on its own: pip, dpkg and the runtime start child
    # processes, which the kernel must hand to qemu too. The F flag makes the kernel open the interpreter
    # now, so it also works inside the chroot, which has no qemu of its own.
    grep -qx enabled "$BINFMT/qemu-aarch64" || die "$BINFMT/qemu-aarch64 is disabled: echo 1 > $BINFMT/qemu-aarch64"
    if ! grep -q '^flags:.*F' "$BINFMT/qemu-aarch64"; then
        # Registered without F (e.g. by binfmt-support): the kernel looks the interpreter up inside the
        # chroot, so an explicit qemu-aarch64-static goes in at that path before anything runs there.
        INTERP=$(sed -n 's/^interpreter //p' "$BINFMT/qemu-aarch64")
        image_prepare_root() { mkdir -p "$ROOT$(dirname "$INTERP")" && cp /usr/bin/qemu-aarch64-static "$ROOT$INTERP"; }
    fi
    echo "$(qemu-aarch64-static --version | head -1), emulating a $QEMU_CPU; $(head -2 "$BINFMT/qemu-aarch64" | tr '\n' ' ')"
fi

image_rootfs
[ "$(in_root uname -m)" = aarch64 ] || die "the root filesystem does not run as aarch64 ($(in_root uname -m))"
PYV=$(in_root python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# ---------------------------------------------------------------- host side
phase "host: dreamlink wheel; onboard dependencies as aarch64 cp${PYV/./} wheels (dreamlink.deploy.wheels)"
image_wheel
"$PY" -m dreamlink.deploy.wheels --pyproject "$REPO/pyproject.toml" --python "$PYV" --download "$CACHE/wheels-$ARCH"

phase "host: a trained cart-pole bundle (dreamlink collect / train / export, as the README's steps)"
if [ -z "${BUNDLE:-}" ] && [ -f "$REPO/runs/demo-cartpole/bundle/manifest.json" ]; then
    BUNDLE=$REPO/runs/demo-cartpole/bundle
fi
if [ -z "${BUNDLE:-}" ]; then
    BUNDLE=$CACHE/cartpole-bundle
    if [ ! -f "$BUNDLE/manifest.json" ]; then
        DATA=$CACHE/cartpole-data && mkdir -p "$DATA" && rm -rf "$BUNDLE"
        host_dl() { "$PY" -m dreamlink.cli "$@" > "$DATA/$1.log" 2>&1 || { tail -20 "$DATA/$1.log"; die "dreamlink $*"; }; }
        host_dl collect cartpole --out "$DATA/train.npz" --transitions 8000 --seed 0
        host_dl collect cartpole --out "$DATA/holdout.npz" --transitions 2000 --seed 1
        host_dl train --data "$DATA/train.npz" --out "$DATA/model.pt" --epochs 25 --ensemble 3 --seed 0
        "$PY" -m dreamlink.cli export --checkpoint "$DATA/model.pt" --data "$DATA/holdout.npz" --out "$BUNDLE"
    fi
fi
echo "bundle: $BUNDLE"

phase "host: dreamlink deploy -> overlay, copied into the arm64 root"
cat > "$WORK/dreamlink.toml" <<EOF
# image-test-arm64 device config: the runtime listens for the SITL vehicle on loopback.
[deploy]
connect = "udpin:127.0.0.1:$SITL_PORT"

[deploy.health]
ticks = 20
# Under qemu a planning step takes ~300x longer than natively (floating point is emulated in software):
# the health check still proves the bundle loads, plans and stays in limits on arm64, with the largest
# budget the config accepts instead of the 20 ms control period.
budget_s = 10.0
EOF
image_overlay "$CACHE/wheels-$ARCH"
rm -rf "$ROOT/root/bundle" && cp -R "$BUNDLE" "$ROOT/root/bundle"

# ---------------------------------------------------------------- inside the arm64 root
image_setup

phase "chroot (arm64): no torch; onboard install size"
in_root "$VENV/bin/python" - <<'EOF' || die "torch is installed in the onboard venv"
import importlib.metadata as md, importlib.util, platform, sys
dists = sorted(f"{d.metadata['Name']} {d.version}" for d in md.distributions())
print(f"{platform.machine()} python {platform.python_version()}: {', '.join(dists)}")
sys.exit(1 if importlib.util.find_spec("torch") or any(d.lower().startswith("torch ") for d in dists) else 0)
EOF
echo "torch: not installed"
SIZE_MB=$(du -sm "$ROOT$VENV" | cut -f1)
echo "onboard install ($VENV): $SIZE_MB MB (limit $SIZE_LIMIT_MB MB); largest:"
du -sm "$ROOT$VENV"/lib/python*/site-packages/* | sort -rn | head -6 | sed "s|$ROOT$VENV/lib/||"
[ "$SIZE_MB" -le "$SIZE_LIMIT_MB" ] || die "onboard install $SIZE_MB MB exceeds $SIZE_LIMIT_MB MB"

phase "chroot (arm64): install-bundle (verify, A/B slot, the runtime's health check)"
in_root "${DL[@]}" install-bundle /root/bundle --no-service | tee "$WORK/install.out"
HEALTH=$(sed -n 's/^ *health-check *//p' "$WORK/install.out")
[ "$HEALTH" = passed ] || die "health check: ${HEALTH:-no result}"
echo "current -> $(in_root readlink /var/lib/dreamlink/current)"

phase "chroot (arm64): dreamlink doctor"
set +e
in_root "${DL[@]}" doctor | tee "$WORK/doctor.out"
DOCTOR_RC=${PIPESTATUS[0]}
set -e
[ "$DOCTOR_RC" = 0 ] || die "doctor reports something that blocks flight (exit $DOCTOR_RC)"
grep -q "aarch64.*NEON/asimd yes" "$WORK/doctor.out" || die "doctor does not name the arm64 CPU features"
if [ "$(uname -m)" != aarch64 ]; then grep -q EMULATED "$WORK/doctor.out" || die "doctor missed the emulation"; fi

phase "flight: cart-pole SITL on the host ($(uname -m), lockstep) <- UDP 127.0.0.1:$SITL_PORT -> arm64 runtime"
bg_start "$PY" -m dreamlink.sim cartpole --out "udp:127.0.0.1:$SITL_PORT" --lockstep --seed 11 > "$WORK/sitl.log" 2>&1
rm -rf "$ROOT/root/flight"
FLY_T0=$(date +%s)
set +e
in_root "$VENV/bin/dreamlink" run --bundle /var/lib/dreamlink/current --connect "udp:127.0.0.1:$SITL_PORT" \
    --lockstep --ticks "$TICKS" --out /root/flight 2>&1 | tail -15
RUN_RC=${PIPESTATUS[0]}
set -e
FLY_S=$(($(date +%s) - FLY_T0))
[ "$RUN_RC" = 0 ] || { tail -5 "$WORK/sitl.log"; die "dreamlink run exited $RUN_RC"; }
BALANCE=$(in_root "$VENV/bin/python" - <<'EOF'
import platform
from dreamlink.reports import cartpole_summary, load_ticks
s = cartpole_summary(load_ticks("/root/flight/ticks.npz"))
print(f"{s['ticks_balanced']} {s['ticks']} {s['longest_balanced_streak']} {s['max_abs_angle_deg']:.2f} {platform.machine()}")
EOF
)
read -r BALANCED FLOWN STREAK MAX_DEG FLIGHT_ARCH <<<"$BALANCE"
echo "balanced $BALANCED / $FLOWN ticks (longest streak $STREAK, max |angle| $MAX_DEG deg), computed on $FLIGHT_ARCH" \
     "in $FLY_S s wall"
[ "$FLOWN" = "$TICKS" ] || die "flew $FLOWN ticks, asked for $TICKS"
[ "$STREAK" -ge "$BALANCED_MIN" ] || die "longest balanced streak $STREAK < $BALANCED_MIN"

phase "done in $(($(date +%s) - T0)) s"
echo "doctor (inside the arm64 root):"
grep -E '^\[.*\] (cpu|onnxruntime|python|budget) ' "$WORK/doctor.out" | sed 's/^/  /'
echo "health check: $HEALTH"
echo "flight: pole balanced $BALANCED / $FLOWN ticks at 50 Hz (lockstep, $FLY_S s wall under emulation)"
echo "onboard install: $SIZE_MB MB <= $SIZE_LIMIT_MB MB, torch not installed"
