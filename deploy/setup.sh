#!/usr/bin/env bash
# Set up a Debian 12 machine (as root) for flotilla and then run one of:
#   deploy/setup.sh            install only
#   deploy/setup.sh dev        install, then bring up the 3-node dev cluster with the manager
#   deploy/setup.sh test [PYTEST_ARGS…]   install with the test tools, then run ruff and the
#                              full test suite (or pytest with PYTEST_ARGS, e.g. one test file)
#
# flotilla lives in its own virtual environment, /opt/flotilla/venv, made from Debian's
# /usr/bin/python3 (whatever python3 comes first on PATH, e.g. pyenv's, is not used): Debian's
# Python refuses system-wide pip installs (PEP 668), and a system-wide docker-py would shadow the
# one Debian's docker-compose needs. The checkout is installed editable, so the venv runs this
# checkout's code (the one setup.sh last ran from); `flotilla` is linked into /usr/local/bin.
# Safe to rerun: what is already in place is checked, not redone.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
VENV=/opt/flotilla/venv
STAMP="$VENV/.flotilla-install"
MODE="${1:-}"
if (($#)); then shift; fi

die() {
    echo "deploy/setup.sh: $*" >&2
    exit 1
}

case "$MODE" in
"" | dev) (($# == 0)) || die "'$MODE' takes no arguments" ;;
test) ;;
*) die "unknown mode '$MODE' (expected nothing, dev or test)" ;;
esac
((EUID == 0)) || die "must run as root (it installs Debian packages and drives the kernel)"
command -v apt-get >/dev/null || die "apt-get not found: flotilla's setup is for Debian 12"

# --------------------------------------------------------------------------- Debian packages

# python3-venv: flotilla's own venv. util-linux/bsdutils: nsenter, unshare, script(1) (the tty
# tests). docker-compose (1.29, with its own docker-py): the compose end-to-end tests.
# libseccomp-dev: the shim is built with -lseccomp to apply containers' seccomp profiles.
apt_packages=(python3 python3-venv ca-certificates busybox-static iptables iproute2 procps gcc
    libc6-dev libseccomp-dev util-linux bsdutils kmod etcd-server openssl docker-compose)
# A docker CLI for the end-to-end tests: docker.io is the only Debian 12 package that has it.
# It also brings dockerd and containerd, which must not run (see below); bench/api.py starts a
# private dockerd of its own for its comparison.
# debootstrap: tests/deploy/test_fresh_install.py proves this script on a fresh Debian 12 root.
# iperf3, iputils-ping: bench/overlay.py measures the overlay with them (iperf3's daemon is off by
# its debconf default, and the policy-rc.d below keeps apt from starting it anyway).
# docker-registry (distribution 2.8): the pull tests start registries of their own with it (its
# own service stays off: the policy-rc.d below, and the unit loop after the install).
if [[ "$MODE" == "test" ]]; then apt_packages+=(debootstrap iperf3 iputils-ping docker-registry); fi
install_docker_cli=0
if ! command -v docker >/dev/null && [[ ! -x /usr/local/bin/docker ]]; then
    install_docker_cli=1
    apt_packages+=(docker.io)
fi
missing=()
for p in "${apt_packages[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

policy_added=0
remove_policy() {
    if ((policy_added)); then rm -f /usr/sbin/policy-rc.d; fi
}
trap remove_policy EXIT

if ((${#missing[@]})); then
    echo "deploy/setup.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    # flotilla runs its own etcd instances (dev cluster, tests), and a dockerd would rewrite
    # iptables: keep apt from starting any service it installs.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    # No recommends: docker-compose recommends docker.io (dockerd), docker.io recommends more.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
    remove_policy
    policy_added=0
fi

unit_file_exists() {
    [[ -e "/lib/systemd/system/$1" || -e "/etc/systemd/system/$1" ]]
}

# Installed services stay off, now and at boot: etcd would hold port 2379, dockerd and
# containerd would rewrite iptables, docker-registry would hold port 5000.
for unit in etcd.service docker.socket docker.service containerd.service docker-registry.service; do
    command -v systemctl >/dev/null || break
    unit_file_exists "$unit" || continue
    if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
        systemctl disable --quiet "$unit" || die "cannot disable $unit"
    fi
    if [[ -d /run/systemd/system ]] && systemctl is-active --quiet "$unit"; then
        systemctl stop "$unit" || die "cannot stop $unit"
    fi
done
if ((install_docker_cli)); then
    command -v docker >/dev/null || die "docker.io is installed but there is no docker command"
    if pgrep -x dockerd >/dev/null || pgrep -x containerd >/dev/null; then
        die "dockerd/containerd are running after installing docker.io; stop them (they would rewrite iptables)"
    fi
fi

# --------------------------------------------------------------------------- the venv

# The test tools (pytest, ruff, docker-py, grpcio-tools) only for `test`; once there they stay.
spec="."
if [[ "$MODE" == "test" ]]; then spec=".[test]"; fi
pyproject_hash="$(sha256sum <pyproject.toml)"
pyproject_hash="${pyproject_hash%% *}"

# What the venv serves: the checkout its editable install points at (asked from /, so that the
# current directory does not answer instead).
venv_checkout() {
    (cd / && "$VENV/bin/python" -c \
        'import deploy, os; print(os.path.dirname(os.path.dirname(os.path.abspath(deploy.__file__))))')
}

installed_ok() {
    [[ -r "$STAMP" ]] || return 1
    local extras hash repo
    read -r extras hash repo <"$STAMP" || return 1
    [[ "$repo" == "$REPO" && "$hash" == "$pyproject_hash" ]] || return 1
    [[ "$spec" == "." || "$extras" == "test" ]] || return 1
    [[ "$(venv_checkout 2>/dev/null)" == "$REPO" ]]
}

# A venv made by another Python (not Debian's /usr/bin/python3), or whose Python no longer
# starts, is made anew.
if [[ -e "$VENV" ]] && ! { grep -qx 'home = /usr/bin' "$VENV/pyvenv.cfg" 2>/dev/null &&
    "$VENV/bin/python" -c 'import sys' 2>/dev/null; }; then
    echo "deploy/setup.sh: $VENV is not a working venv of /usr/bin/python3: making it anew"
    rm -rf "$VENV"
fi
if [[ ! -e "$VENV" ]]; then
    mkdir -p "$(dirname "$VENV")"
    if ! /usr/bin/python3 -m venv "$VENV"; then
        rm -rf "$VENV"
        die "cannot make the venv $VENV with /usr/bin/python3 -m venv (see above)"
    fi
fi
if ! installed_ok; then
    echo "deploy/setup.sh: installing flotilla ($REPO, editable) into $VENV"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" ||
        die "pip install -e '$spec' into $VENV failed (see pip's message above)"
    if ! where="$(venv_checkout)" || [[ "$where" != "$REPO" ]]; then
        die "after pip install, $VENV imports flotilla from '${where:-nowhere}', not $REPO"
    fi
    extras=base
    if [[ "$spec" != "." ]]; then extras=test; fi
    echo "$extras $pyproject_hash $REPO" >"$STAMP"
fi

ln -sfn "$VENV/bin/flotilla" /usr/local/bin/flotilla || die "cannot link /usr/local/bin/flotilla"
if [[ "$(type -P flotilla)" != /usr/local/bin/flotilla ]]; then
    echo "deploy/setup.sh: warning: /usr/local/bin/flotilla is not the flotilla found on PATH" \
        "($(type -P flotilla), PATH=$PATH)" >&2
fi

if ! grep -qw overlay /proc/filesystems 2>/dev/null && ! modprobe overlay 2>/dev/null; then
    echo "deploy/setup.sh: note: cannot load the overlay module (in a chroot or container?);" \
        "the runtime needs overlayfs where it runs" >&2
fi

echo "deploy/setup.sh: flotilla is installed: /usr/local/bin/flotilla -> $VENV/bin/flotilla"
echo "deploy/setup.sh: for python -m runtime, bench/*.py and pytest: . $VENV/bin/activate"

if [[ "$MODE" == "dev" ]]; then
    exec "$VENV/bin/python" -m deploy.cli dev up
fi
if [[ "$MODE" == "test" ]]; then
    "$VENV/bin/python" -m ruff check . || die "ruff found problems"
    rc=0
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider "${@:-tests}" || rc=$?
    # pytest's 5 is "no tests collected": a run that tested nothing is a failure.
    if ((rc == 5)); then die "pytest collected no tests"; fi
    exit "$rc"
fi
