# scripts/image-lib.sh: what the image tests share, sourced by scripts/image-test.sh (this machine's
# architecture) and scripts/image-test-arm64.sh (arm64 under qemu-user). The caller sets ARCH (a dpkg
# architecture) and WORK, then calls image_init; the steps below run in the order a user builds an image:
# root filesystem (debootstrap, cached), the dreamlink wheel, the overlay `dreamlink deploy` writes, and
# setup-rootfs.sh inside it (chroot), as pi-gen's stage does. What a test starts in the background goes
# through bg_start (scripts/bg-lib.sh), so that the cleanup stops it, wrapper and all.
# shellcheck shell=bash

. "$(dirname "${BASH_SOURCE[0]}")/bg-lib.sh"

image_init() {
    REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    PY=${PY:-$REPO/.venv/bin/python}
    SUITE=${SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    PACKAGES=${PACKAGES:-python3,python3-venv,systemd,logrotate,ca-certificates}
    CACHE=$WORK/cache
    KEY=$(echo "$SUITE $ARCH $PACKAGES $MIRROR" | sha256sum | cut -c1-8)
    TARBALL=$CACHE/debootstrap-$SUITE-$ARCH-$KEY.tgz
    ROOTFS_TAR=$CACHE/rootfs-$SUITE-$ARCH-$KEY.tar
    ROOT=$WORK/rootfs
    VENV=/opt/dreamlink/venv
    ROOT_MOUNTS=${ROOT_MOUNTS:-proc sysfs}
    NAME=$(basename "$0" .sh)
    T0=$(date +%s)
    [ "$(id -u)" = 0 ] || { echo "$NAME needs root (debootstrap, chroot, mount): sudo make $NAME"; exit 2; }
    command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
    mkdir -p "$CACHE" "$WORK"
    trap image_cleanup EXIT
}

phase() { echo; echo "== [$(($(date +%s) - T0)) s] $*"; }
die() { echo "$NAME: FAIL: $*" >&2; exit 1; }
# A clean environment inside, as on a device: nothing of the host's (PIP_*, PYTHONPATH) leaks in.
ROOT_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
in_root() { chroot "$ROOT" /usr/bin/env -i "${ROOT_ENV[@]}" "$@"; }

image_unmount() {
    for m in sys proc; do
        if mountpoint -q "$ROOT/$m"; then umount -l "$ROOT/$m"; fi
    done
}

image_cleanup() {
    bg_stop_all || true  # it names what it could not stop
    image_unmount
}

# A pristine root filesystem at $ROOT: debootstrap's downloads are cached as a tarball, and the
# unpacked result as a tar, so reruns only untar it (dpkg runs once; under qemu that is minutes).
image_rootfs() {
    phase "debootstrap $SUITE/$ARCH minbase + $PACKAGES"
    if [ ! -f "$TARBALL" ]; then
        rm -rf "$WORK/tarball-work"
        debootstrap --arch="$ARCH" --variant=minbase --include="$PACKAGES" --make-tarball="$TARBALL.part" \
            "$SUITE" "$WORK/tarball-work" "$MIRROR"
        mv "$TARBALL.part" "$TARBALL"
        rm -rf "$WORK/tarball-work"
        echo "cached $TARBALL ($(du -h "$TARBALL" | cut -f1))"
    else
        echo "using cached $TARBALL"
    fi
    image_unmount
    if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then die "something is still mounted under $ROOT"; fi
    rm -rf "$ROOT" && mkdir -p "$ROOT"
    if declare -F image_prepare_root >/dev/null; then image_prepare_root; fi  # the caller's hook
    if [ -f "$ROOTFS_TAR" ] && [ "$ROOTFS_TAR" -nt "$TARBALL" ]; then
        tar -C "$ROOT" --numeric-owner -xpf "$ROOTFS_TAR"
        echo "unpacked cached $ROOTFS_TAR"
    else
        debootstrap --arch="$ARCH" --variant=minbase --include="$PACKAGES" --unpack-tarball="$TARBALL" \
            "$SUITE" "$ROOT" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; die "debootstrap"; }
        tar -C "$ROOT" --numeric-owner -cpf "$ROOTFS_TAR.part" . && mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    fi
    echo "rootfs: $ROOT ($(du -sh "$ROOT" | cut -f1)), $(in_root python3 --version)"
}

# The dreamlink wheel, built from a copy of the tree (setuptools leaves build/ scratch folders in the
# tree it builds). Sets WHEEL.
image_wheel() {
    rm -rf "$WORK/wheels" "$WORK/src" && mkdir -p "$WORK/wheels" "$WORK/src"
    tar -C "$REPO" --exclude=./.venv --exclude=./runs --exclude=./build --exclude='*.egg-info' --exclude=.git -cf - . \
        | tar -C "$WORK/src" -xf -
    "$PY" -m pip wheel "$WORK/src" --no-deps -q -w "$WORK/wheels"
    WHEEL=$(ls "$WORK"/wheels/dreamlink-*.whl)
}

# `dreamlink deploy` -> overlay (+ pi-gen stage), copied in as pi-gen's 00-run.sh does, with the wheels
# in $1 (the onboard dependencies) next to dreamlink's in /opt/dreamlink/wheels for an offline install.
image_overlay() {
    local wheels=$1
    rm -rf "$WORK/overlay" "$WORK/pi-gen"
    "$PY" -m dreamlink.deploy deploy --root "$WORK/overlay" --config "$WORK/dreamlink.toml" --wheel "$WHEEL" \
        --pi-gen "$WORK/pi-gen"
    cp -R --preserve=mode,timestamps,links --no-preserve=ownership "$WORK/overlay/." "$ROOT/"
    cp "$wheels"/*.whl "$ROOT/opt/dreamlink/wheels/"
    for m in $ROOT_MOUNTS; do mount -t "$m" "$m" "$ROOT/${m/sysfs/sys}"; done
}

# setup-rootfs.sh inside the image (venv + wheels offline, sysusers, tmpfiles). Sets DL, the command
# that runs the deploy subcommands inside the image.
image_setup() {
    phase "chroot: setup-rootfs.sh (venv + wheel offline, sysusers, tmpfiles)"
    in_root env DREAMLINK_PIP_ARGS=--no-index /usr/lib/dreamlink/setup-rootfs.sh
    in_root id dreamlink
    in_root stat -c '%A %U:%G %n' /var/lib/dreamlink /var/lib/dreamlink/slots /var/log/dreamlink
    DL=("$VENV/bin/dreamlink")
    if ! in_root "${DL[@]}" --help 2>/dev/null | grep -q install-bundle; then
        echo "note: this dreamlink CLI has no deploy subcommands yet; using python -m dreamlink.deploy"
        DL=("$VENV/bin/python" -m dreamlink.deploy)
    fi
}
