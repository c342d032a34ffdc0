"""Where the dev cluster lives: its names, addresses, paths and state file.

Every other dev_* module finds things through these, so `down()` can find a crashed cluster's
leftovers by name and path alone, even when the state file is missing or stale.
"""

from __future__ import annotations

import json
import os
import re

ROOT = "/var/lib/flotilla/dev"
STATE = os.path.join(ROOT, "state.json")
BRIDGE = "flt-underlay"
HOST_IP = "10.99.0.1"
PREFIX = "/flotilla"
ETCD_PORT = 2379
AGENT_PORT = 4243
METRICS_PORT = 9323  # dockerd's customary metrics port
# The agents' failover timings: `flotilla join`'s defaults (agent/main.py, docs/failover.md).
HEARTBEAT = "250ms"
TTL = "3s"
FENCE_GUARD = "250ms"
NETNS_DIR = "/run/netns"
NODE_RE = re.compile(r"^node-(\d+)$")
MANAGER_ADDR = "127.0.0.1:2375"
MANAGER_METRICS = "127.0.0.1:9324"  # the manager's Prometheus endpoint
# The manager also serves a unix socket: over TCP the docker CLI cannot detach (ctrl-p ctrl-q)
# from `run -it`/`attach` (its escape check misses the error TCPConn.ReadFrom wraps).
MANAGER_SOCKET = os.path.join(ROOT, "docker.sock")
CERTS = os.path.join(ROOT, "certs")  # the cluster CA and every certificate (deploy/dev_certs.py)
# The agents' certs.d (`join --registry-certs-dir`): <host:port>/ca.crt of registries they trust.
REGISTRY_CERTS = os.path.join(ROOT, "registry-certs.d")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Labels = dict[str, dict[str, str]]


class DevError(Exception):
    """A dev-cluster operation that cannot be done (bad node name, nothing up, timeout)."""


# --------------------------------------------------------------------------- naming


def node_name(i: int) -> str:
    return f"node-{i}"


def node_index(name: str) -> int:
    m = NODE_RE.match(name)
    if not m:
        raise DevError(f"not a dev node name: {name!r} (expected node-N)")
    return int(m.group(1))


def node_ip(i: int) -> str:
    return f"10.99.0.{10 + i}"


def veth_name(i: int) -> str:
    return f"flt-u-{i}"


def etcd_endpoint() -> str:
    return f"127.0.0.1:{ETCD_PORT}"


def discovery_url() -> str:
    return f"etcd://{etcd_endpoint()}{PREFIX}"


def docker_host() -> str:
    return f"tcp://{MANAGER_ADDR}"


# --------------------------------------------------------------------------- state, logs


def load_state() -> dict:
    try:
        with open(STATE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(state: dict) -> None:
    # Imported here: `flotilla list` and `--help` load no runtime package (tests/deploy/test_cli).
    from runtime.fileio import write_atomic

    os.makedirs(ROOT, exist_ok=True)
    write_atomic(STATE, json.dumps(state, indent=2, sort_keys=True).encode())


def is_up() -> bool:
    return os.path.exists(STATE)


def log_path(name: str) -> str:
    """The log of one process of the cluster: node-N, manager or etcd."""
    return os.path.join(ROOT, f"{name}.log")


def log_tail(name: str, lines: int = 15) -> str:
    try:
        with open(log_path(name), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""
