#!/usr/bin/env bash
# Proof that deploy/setup.sh installs flotilla on a fresh Debian 12 (as root):
#   deploy/check_fresh_install.sh
# debootstraps bookworm into a temporary directory, copies this checkout (work tree, no .git) in,
# runs deploy/setup.sh in a chroot there with a clean environment, then `flotilla --help`.
# Exits non-zero on any failure. Everything is removed afterwards, also on failure: the chroot
# work runs in a private mount namespace (its proc/sys/dev mounts die with it), processes left
# inside the root are killed, and the directory is deleted only once nothing is mounted in it.
# Inside, apt starts no service (policy-rc.d); modprobe cannot work there, and setup.sh says so.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
CHROOT_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
    LANG=C.UTF-8 TERM=dumb)
# This machine's CA bundle, for pip in the chroot: HTTPS may pass a proxy that only this
# machine's trust store knows. The fresh root keeps Debian's own store.
HOST_CA="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"

die() {
    echo "check_fresh_install: $*" >&2
    exit 1
}

step() {
    echo "check_fresh_install: [$((SECONDS))s] $*"
}

in_chroot() {
    env -i "${CHROOT_ENV[@]}" chroot "$ROOT" "$@"
}

# Runs in the private mount namespace: debootstrap, mounts, setup.sh and `flotilla --help`.
inside() {
    local root=$ROOT
    step "debootstrap $SUITE into $root"
    debootstrap "$SUITE" "$root" "$MIRROR" >"$root.debootstrap.log" 2>&1 ||
        die "debootstrap failed:"$'\n'"$(tail -n 30 "$root.debootstrap.log")"
    # A plain Debian 12 has its updates and security suites too.
    printf 'deb %s %s-updates main\ndeb %s-security %s-security main\n' \
        "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" >>"$root/etc/apt/sources.list" ||
        die "cannot add the updates and security suites"
    mount -t proc proc "$root/proc" || die "cannot mount proc in the chroot"
    mount -t sysfs sysfs "$root/sys" || die "cannot mount sysfs in the chroot"
    mount --rbind /dev "$root/dev" || die "cannot bind /dev into the chroot"
    cp /etc/resolv.conf "$root/etc/resolv.conf" || die "cannot copy resolv.conf into the chroot"
    if [[ -r "$HOST_CA" ]]; then
        cp "$HOST_CA" "$root/etc/host-ca-bundle.crt" || die "cannot copy $HOST_CA into the chroot"
        CHROOT_ENV+=(PIP_CERT=/etc/host-ca-bundle.crt)
    fi
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
    mkdir "$root/flotilla"
    tar -C "$REPO" --exclude=.git --exclude=__pycache__ --exclude='*.egg-info' -cf - . |
        tar -C "$root/flotilla" -xf - || die "cannot copy the checkout into the chroot"
    step "deploy/setup.sh in the chroot"
    in_chroot /flotilla/deploy/setup.sh || die "deploy/setup.sh failed in the chroot"
    step "flotilla --help, the docker CLI and Debian's docker-compose in the chroot"
    in_chroot /bin/sh -c 'cd / && flotilla --help' >"$root.help" ||
        die "flotilla --help failed in the chroot"
    grep -q "^usage: flotilla" "$root.help" || die "flotilla --help printed no usage: $(cat "$root.help")"
    # `--help` imports the command line only: the manager's and agent's own dependencies too.
    in_chroot /bin/sh -c 'cd / && /opt/flotilla/venv/bin/python -c "import manager.app, manager.main, agent.main"' ||
        die "the manager or the agent does not import in the chroot"
    in_chroot docker --version || die "no docker CLI in the chroot"
    in_chroot docker-compose version --short || die "Debian's docker-compose does not run"
    for unit in docker.service docker.socket containerd.service; do
        if in_chroot systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            die "$unit is enabled in the chroot"
        fi
    done
    step "again: deploy/setup.sh (installed: nothing to do)"
    in_chroot /flotilla/deploy/setup.sh >"$root.again" || die "deploy/setup.sh failed on its second run"
    if grep "installing" "$root.again"; then die "the second deploy/setup.sh installed again"; fi
    step "ok"
}

if [[ "${1:-}" == "--inside" ]]; then
    ROOT=$2
    inside
    exit 0
fi

((EUID == 0)) || die "must run as root (debootstrap, chroot, mounts)"
if ! command -v debootstrap >/dev/null; then
    step "installing debootstrap"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap \
        >/dev/null || die "cannot install debootstrap"
fi

ROOT="$(mktemp -d /var/tmp/flt-fresh-debian-XXXXXX)"
chmod 755 "$ROOT" # it becomes /, which apt's _apt user must traverse
cleanup() {
    local proc pid
    # Whatever still runs inside the root (nothing should) would keep it busy.
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        if [[ "$(readlink "/proc/$pid/root" 2>/dev/null)" == "$ROOT" ]]; then
            echo "check_fresh_install: killing $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)) left in the chroot" >&2
            kill -9 "$pid" 2>/dev/null || echo "check_fresh_install: cannot kill $pid" >&2
        fi
    done
    if grep -q " $ROOT" /proc/self/mountinfo; then
        echo "check_fresh_install: $ROOT still has mounts; not deleting it" >&2
        return 1
    fi
    rm -rf --one-file-system "$ROOT" "$ROOT.debootstrap.log" "$ROOT.help" "$ROOT.again"
}
trap cleanup EXIT

# The mounts live in a mount namespace of this script's own and go away with it.
unshare --mount --propagation private -- "$REPO/deploy/check_fresh_install.sh" --inside "$ROOT" ||
    die "a fresh Debian 12 could not install flotilla (see above); took ${SECONDS}s"
echo "check_fresh_install: deploy/setup.sh installed flotilla on a fresh Debian 12 in ${SECONDS}s"
