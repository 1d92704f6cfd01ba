"""Shell scripts and notes the overlay and the image-builder stages carry, as text.

Kept as Python strings (not package data) so a pip-installed dreamlink writes the same
files as a checkout, with nothing to forget in the wheel. `@NAME@` marks a value filled in
by `render`; shell `${...}` is left alone.
"""

from __future__ import annotations

import re


def render(template: str, **values: str) -> str:
    out = template
    for key, value in values.items():
        out = out.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", out)
    if left:
        raise KeyError(f"template values missing: {sorted(set(left))}")
    return out


# Runs inside the target root filesystem as root: in pi-gen's chroot, in the image test's
# chroot, or on a Jetson after copying the overlay. One script, so all three install alike.
SETUP_ROOTFS = """\
#!/bin/sh
# dreamlink: install the onboard runtime into this root filesystem (run as root, inside it).
# Extra pip flags (e.g. --no-index for an offline build) come from DREAMLINK_PIP_ARGS.
set -eu
VENV=@VENV@
WHEELS=/opt/dreamlink/wheels
USER_NAME=@USER@
GROUPS_EXTRA="@GROUPS@"

python3 -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/pip" install --disable-pip-version-check --no-cache-dir ${DREAMLINK_PIP_ARGS:-} \\
    --find-links "$WHEELS" "$WHEELS"/dreamlink-*.whl
ln -sf "$VENV/bin/dreamlink" /usr/local/bin/dreamlink

if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers /usr/lib/sysusers.d/dreamlink.conf
else
    getent group "$USER_NAME" >/dev/null || groupadd --system "$USER_NAME"
    id -u "$USER_NAME" >/dev/null 2>&1 || useradd --system --gid "$USER_NAME" \\
        --home-dir @STATE_DIR@ --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
    for g in $GROUPS_EXTRA; do
        getent group "$g" >/dev/null || groupadd --system "$g"
        usermod -a -G "$g" "$USER_NAME"
    done
fi

if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/dreamlink.conf
else
    install -d -m 0755 @STATE_DIR@ @STATE_DIR@/slots
    install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" /var/log/dreamlink
fi
echo "dreamlink installed in $VENV; service @UNIT@ enabled (starts once a bundle is installed)"
"""

PI_GEN_PRERUN = """\
#!/bin/bash -e
if [ ! -d "${ROOTFS_DIR}" ]; then
    copy_previous
fi
"""

PI_GEN_EXPORT = """\
IMG_SUFFIX="-dreamlink"
if [ "${USE_QEMU}" = "1" ]; then
    export IMG_SUFFIX="${IMG_SUFFIX}-qemu"
fi
"""

PI_GEN_PACKAGES = """\
python3
python3-venv
python3-pip
logrotate
"""

PI_GEN_RUN = """\
#!/bin/bash -e
# dreamlink stage: copy the root-filesystem overlay (written by `dreamlink deploy`), then
# install the wheel into a venv inside the image. Runs on the build host; on_chroot enters
# the image. Onboard dependencies (numpy, onnxruntime, pymavlink) come from PyPI/piwheels.
cp -R --preserve=mode,timestamps,links --no-preserve=ownership files/overlay/. "${ROOTFS_DIR}/"
on_chroot << EOF
/usr/lib/dreamlink/setup-rootfs.sh
EOF
"""

PI_GEN_README = """\
# pi-gen stage: dreamlink

Written by `dreamlink deploy --pi-gen`. Build a Raspberry Pi OS Lite (64-bit, bookworm)
image with the dreamlink service on it:

    git clone --branch arm64 https://github.com/RPi-Distro/pi-gen.git
    cp -R stage-dreamlink pi-gen/
    cd pi-gen
    echo 'IMG_NAME=dreamlink' > config
    echo 'STAGE_LIST="stage0 stage1 stage2 stage-dreamlink"' >> config
    touch stage2/SKIP_IMAGES        # export only the dreamlink image
    sudo ./build.sh                 # or ./build-docker.sh

`00-dreamlink/files/overlay/` is the overlay tree copied into the image; `00-run.sh`
copies it and runs `/usr/lib/dreamlink/setup-rootfs.sh` in the image's chroot (venv in
@VENV@, user `@USER@`, tmpfiles, sysusers). 64-bit only: onnxruntime publishes no 32-bit
ARM wheels.
"""

JETSON_INSTALL = """\
#!/bin/sh
# Install the dreamlink overlay on a running Jetson (JetPack 6 / Jetson Linux 36, Ubuntu 22.04).
# Usage: sudo ./install-on-jetson.sh        (from the folder `dreamlink deploy --jetson` wrote)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
apt-get install -y --no-install-recommends python3-venv python3-pip logrotate
cp -R --preserve=mode,timestamps,links --no-preserve=ownership "$HERE/overlay/." /
/usr/lib/dreamlink/setup-rootfs.sh
systemctl daemon-reload
echo "now: sudo dreamlink install-bundle <bundle>  (starts @UNIT@)"
"""

JETSON_README = """\
# dreamlink on NVIDIA Jetson (Jetson Linux / JetPack)

Written by `dreamlink deploy --jetson`. The same overlay as the Raspberry Pi image.

## On a flashed Jetson (simplest)

    scp -r jetson/ jetson-host:
    ssh jetson-host 'cd jetson && sudo ./install-on-jetson.sh'
    ssh jetson-host 'sudo dreamlink install-bundle ~/my-bundle && dreamlink doctor'

## Baked into the flashed image (Linux_for_Tegra)

After `sudo ./apply_binaries.sh` in `Linux_for_Tegra/`, copy the overlay into
`Linux_for_Tegra/rootfs/` and run the setup script in that root filesystem (on an x86
host: `apt install qemu-user-static binfmt-support` first so the aarch64 chroot runs):

    sudo cp -R --no-preserve=ownership jetson/overlay/. Linux_for_Tegra/rootfs/
    sudo cp /etc/resolv.conf Linux_for_Tegra/rootfs/etc/resolv.conf
    sudo chroot Linux_for_Tegra/rootfs /bin/sh -c \\
        'apt-get update && apt-get install -y python3-venv python3-pip && /usr/lib/dreamlink/setup-rootfs.sh'
    sudo ./flash.sh <board> internal

## Notes

- Python: JetPack 6 ships Python 3.10; dreamlink needs `tomli` there (pulled in by the wheel).
- ONNX Runtime: the PyPI `onnxruntime` wheel runs on the Jetson's ARM cores (CPU provider).
  For the GPU, install NVIDIA's `onnxruntime-gpu` wheel for your JetPack into @VENV@;
  `dreamlink doctor` lists the providers it finds.
- Serial: the 40-pin header UART is `/dev/ttyTHS1` (Orin: `/dev/ttyTHS0`/`ttyTHS1`), group
  `dialout`. Disable the serial console on it (`systemctl disable nvgetty`) before flying.
- Clocks: run `sudo jetson_clocks` (or a `nvpmodel` mode with fixed clocks) so planning
  latency does not follow DVFS; `dreamlink doctor` warns about a non-performance governor.
"""
