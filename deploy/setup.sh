#!/usr/bin/env bash
# Set up a Debian 12 machine (as root) for flotilla and then run one of:
#   deploy/setup.sh            install only
#   deploy/setup.sh dev        install, then bring up the 3-node dev cluster with the manager
#   deploy/setup.sh test       install, then run the full test suite
set -euo pipefail
cd "$(dirname "$0")/.."

# docker-compose (1.29, with its own docker-py) is for the compose end-to-end tests.
apt_packages=(busybox-static iptables iproute2 procps gcc libc6-dev util-linux kmod etcd-server openssl
    docker-compose)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # flotilla runs its own etcd instances (dev cluster, tests): keep apt from starting the
    # package's service, which would hold port 2379.
    policy_added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    # No recommends: docker-compose recommends docker.io, whose dockerd would rewrite iptables.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((policy_added)); then rm -f /usr/sbin/policy-rc.d; fi
fi
if [[ -d /run/systemd/system ]] && systemctl list-unit-files etcd.service >/dev/null 2>&1; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
fi

# The real interpreter, not a pyenv shim (a shim adds ~55 ms to every start).
PYTHON="$(python3 -c 'import sys; print(sys.executable)')"
"$PYTHON" -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v -E '^WARNING|^\s*$' || true
"$PYTHON" -c 'import runtime, pyroute2, pytest_asyncio' # fail early if the install did not work

modprobe overlay 2>/dev/null || true

if [[ "${1:-}" == "dev" ]]; then
    exec "$PYTHON" -m deploy.cli dev up
fi
if [[ "${1:-}" == "test" ]]; then
    "$PYTHON" -m ruff check .
    exec "$PYTHON" -m pytest -q -p no:cacheprovider tests
fi
