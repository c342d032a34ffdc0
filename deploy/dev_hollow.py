"""The dev cluster's hollow nodes (`flotilla dev up --hollow N`): one `flotilla hollow` process
in the root netns hosting hollow-0 … hollow-(N-1) (agent/hollow_host.py), each on its own port
of 127.0.0.1, registered in the dev etcd beside the real nodes. Its certificate (`hollow`, IP
SAN 127.0.0.1, node role) is shared by all of them; its log is ROOT/hollow.log; state.json
keeps {"hollow": {"count", "pid", "cmd"}}.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from deploy.dev_certs import dev_tls, ensure_ca
from deploy.dev_layout import (
    CERTS,
    PREFIX,
    DevError,
    etcd_endpoint,
    load_state,
    log_tail,
    save_state,
)
from deploy.dev_processes import _spawn, alive, cmdline, kill_all, pids, registered

HOLLOW = "hollow"  # the process's certificate and log name
NAME_PREFIX = "hollow-"
MAX_HOLLOW = 5000
# Keep-alives of hollow nodes: slower than the real dev nodes' 250 ms (a thousand nodes in one
# process), still well inside a failover drill's patience.
HEARTBEAT = "1s"
TTL = "5s"
STOP_GRACE_S = 30.0  # SIGTERM: every node revokes its lease first


def hollow_name(i: int) -> str:
    return f"{NAME_PREFIX}{i}"


def is_hollow_name(name: str) -> bool:
    return name.startswith(NAME_PREFIX) and name[len(NAME_PREFIX) :].isdigit()


def hollow_command(count: int) -> list[str]:
    tls = dev_tls(HOLLOW)
    return [
        sys.executable,
        "-m",
        "deploy.cli",
        "hollow",
        "--etcd",
        etcd_endpoint(),
        "--prefix",
        PREFIX,
        "--count",
        str(count),
        "--name-prefix",
        NAME_PREFIX,
        "--listen-host",
        "127.0.0.1",
        "--heartbeat",
        HEARTBEAT,
        "--ttl",
        TTL,
        "--tlscacert",
        tls.ca,
        "--tlscert",
        tls.cert,
        "--tlskey",
        tls.key,
    ]


def _ensure_cert() -> None:
    from deploy import certs
    from proto import cert_roles

    ensure_ca()
    if not os.path.exists(dev_tls(HOLLOW).key):
        certs.make_cert(CERTS, HOLLOW, [HOLLOW, "127.0.0.1"], role=cert_roles.NODE)


def _is_hollow_host(pid: int) -> bool:
    """Guards against pid reuse: a `flotilla hollow` of this dev cluster (its cert is ours)."""
    args = cmdline(pid)
    return "hollow" in args and "deploy.cli" in args and dev_tls(HOLLOW).cert in args


def hollow_pids(state: dict | None = None) -> set[int]:
    """The dev cluster's hollow host: from the state file and by scanning /proc."""
    state = load_state() if state is None else state
    found = {p for p in pids() if _is_hollow_host(p) and alive(p)}
    pid = state.get("hollow", {}).get("pid")
    if isinstance(pid, int) and alive(pid) and _is_hollow_host(pid):
        found.add(pid)
    return found


def start_hollow(count: int, timeout: float) -> dict[str, object]:
    """Spawn the hollow host with `count` nodes; wait until all are registered; their records."""
    if not 1 <= count <= MAX_HOLLOW:
        raise DevError(f"--hollow must be between 1 and {MAX_HOLLOW}")
    _ensure_cert()
    cmd = hollow_command(count)
    pid = _spawn(cmd, HOLLOW).pid
    state = load_state()
    state["hollow"] = {"count": count, "pid": pid, "cmd": cmd}
    save_state(state)
    want = {hollow_name(i) for i in range(count)}
    deadline = time.monotonic() + timeout
    while True:
        nodes = {n: r for n, r in registered(timeout=10.0).items() if n in want}
        if len(nodes) == len(want):
            return nodes
        if not alive(pid):
            raise DevError(f"the hollow host exited\n--- hollow.log\n{log_tail(HOLLOW)}")
        if time.monotonic() > deadline:
            raise DevError(
                f"{len(want) - len(nodes)} of {count} hollow nodes not registered after "
                f"{timeout:.0f}s\n--- hollow.log\n{log_tail(HOLLOW)}"
            )
        time.sleep(0.5)


def stop_hollow(state: dict | None = None) -> None:
    kill_all(hollow_pids(state), grace=STOP_GRACE_S)


@dataclass
class HollowStatus:
    count: int  # as started
    pid: int | None
    registered: int

    def line(self) -> str:
        process = f"running (pid {self.pid})" if self.pid else "stopped"
        return f"hollow  {self.count} nodes  process={process}  registered {self.registered}"


def hollow_status(nodes: dict[str, object], state: dict | None = None) -> HollowStatus | None:
    """None when this cluster has no hollow nodes (and no hollow host is left running)."""
    state = load_state() if state is None else state
    running = sorted(hollow_pids(state))
    count = int(state.get("hollow", {}).get("count", 0))
    if not count and not running:
        return None
    return HollowStatus(
        count=count,
        pid=running[0] if running else None,
        registered=sum(1 for name in nodes if is_hollow_name(name)),
    )
