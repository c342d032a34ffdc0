"""The dev cluster's hollow nodes (`flotilla dev up --hollow N [--hollow-per-host M]`): one or
more `flotilla hollow` processes ("hollow hosts") in the root netns, host K serving
hollow-(K*M) … hollow-(K*M+M-1) (agent/hollow_host.py `--first`), each node on its own port of
127.0.0.1, registered in the dev etcd beside the real nodes. Their certificate (`hollow`, IP
SAN 127.0.0.1, node role) is shared by all of them; host K logs to ROOT/hollow-host-K.log;
state.json keeps {"hollow": {"count", "per_host", "hosts": [{"index", "first", "count", "pid",
"cmd"}]}}.

Several hosts let both cores serve the nodes, and let a scale run lose many nodes at once as a
machine dies: `kill_host(K)` SIGKILLs host K (its nodes' leases expire, nothing comes back).
"""

from __future__ import annotations

import os
import signal
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
from deploy.dev_processes import (
    _spawn,
    alive,
    cmdline,
    kill_all,
    pids,
    registered,
    send_signal,
    wait_gone,
)

HOLLOW = "hollow"  # the hosts' certificate name
NAME_PREFIX = "hollow-"
MAX_HOLLOW = 5000
# Keep-alives of hollow nodes: slower than the real dev nodes' 250 ms (a thousand nodes in one
# process), still well inside a failover drill's patience. Also with a lease shared by a
# host's nodes: at 250 ms / TTL 3 s (half a second per keep-alive before it redials) a host
# busy answering a restarted manager's thousand handshakes can lose its lease, and with it
# all its nodes at once (two of five scale runs counted lost containers that way).
HEARTBEAT = "1s"
TTL = "5s"
STOP_GRACE_S = 30.0  # SIGTERM: every node revokes its lease first


def hollow_name(i: int) -> str:
    return f"{NAME_PREFIX}{i}"


def is_hollow_name(name: str) -> bool:
    return name.startswith(NAME_PREFIX) and name[len(NAME_PREFIX) :].isdigit()


def host_log(index: int) -> str:
    """The log name of hollow host `index` (ROOT/<name>.log)."""
    return f"hollow-host-{index}"


def host_slices(count: int, per_host: int) -> list[tuple[int, int]]:
    """(first, count) of each host: `per_host` nodes each, the last one the rest."""
    per_host = per_host or count
    return [(first, min(per_host, count - first)) for first in range(0, count, per_host)]


def hollow_command(count: int, first: int = 0, shared_lease: bool = False) -> list[str]:
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
        "--first",
        str(first),
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
        *(["--shared-lease"] if shared_lease else []),
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
    """The dev cluster's hollow hosts: from the state file and by scanning /proc."""
    state = load_state() if state is None else state
    found = {p for p in pids() if _is_hollow_host(p) and alive(p)}
    for host in state.get("hollow", {}).get("hosts", []):
        pid = host.get("pid")
        if isinstance(pid, int) and alive(pid) and _is_hollow_host(pid):
            found.add(pid)
    return found


def _host_pid(host: dict) -> int | None:
    pid = host.get("pid")
    return pid if isinstance(pid, int) and alive(pid) and _is_hollow_host(pid) else None


def start_hollow(
    count: int, timeout: float, per_host: int = 0, shared_lease: bool = False
) -> dict[str, object]:
    """Spawn the hollow hosts (`per_host` nodes each; 0: one host for all); wait until every
    node is registered; their records."""
    if not 1 <= count <= MAX_HOLLOW:
        raise DevError(f"--hollow must be between 1 and {MAX_HOLLOW}")
    if per_host < 0:
        raise DevError("--hollow-per-host must be positive")
    _ensure_cert()
    hosts: list[dict] = []
    state = load_state()
    state["hollow"] = {"count": count, "per_host": per_host or count, "hosts": hosts}
    deadline = time.monotonic() + timeout
    nodes: dict[str, object] = {}
    # One host at a time, each once its nodes are registered: ten hosts dialling etcd and the
    # manager with mutual TLS at once (1,000 nodes, 2,000 etcd connections) starve two cores
    # until leases lapse and nothing registers.
    for index, (first, n) in enumerate(host_slices(count, per_host)):
        cmd = hollow_command(n, first, shared_lease)
        pid = _spawn(cmd, host_log(index)).pid
        hosts.append({"index": index, "first": first, "count": n, "pid": pid, "cmd": cmd})
        save_state(state)
        nodes |= _wait_hosts_registered(hosts, {hollow_name(i) for i in range(first + n)}, deadline)
    return nodes


def _wait_hosts_registered(hosts: list[dict], want: set[str], deadline: float) -> dict[str, object]:
    """Until every node in `want` is registered; DevError with the hosts' log tails."""
    while True:
        nodes = {n: r for n, r in registered(timeout=10.0).items() if n in want}
        if len(nodes) == len(want):
            return nodes
        for host in hosts:
            if not alive(host["pid"]):
                log = host_log(host["index"])
                raise DevError(
                    f"hollow host {host['index']} exited\n--- {log}.log\n{log_tail(log)}"
                )
        if time.monotonic() > deadline:
            tails = "".join(
                f"--- {host_log(h['index'])}.log\n{log_tail(host_log(h['index']), 5)}"
                for h in hosts
            )
            raise DevError(
                f"{len(want) - len(nodes)} of {len(want)} hollow nodes not registered in "
                f"time\n{tails}"
            )
        time.sleep(0.5)


def stop_hollow(state: dict | None = None) -> None:
    kill_all(hollow_pids(state), grace=STOP_GRACE_S)


def _host(index: int) -> dict:
    hosts = load_state().get("hollow", {}).get("hosts", [])
    host = next((h for h in hosts if h.get("index") == index), None)
    if host is None:
        raise DevError(f"no hollow host {index} (the cluster has {len(hosts)})")
    return host


def host_nodes(index: int) -> list[str]:
    """The names of the nodes hollow host `index` hosts."""
    host = _host(index)
    return [hollow_name(i) for i in range(host["first"], host["first"] + host["count"])]


def kill_host(index: int) -> list[str]:
    """SIGKILL hollow host `index`, as its machine dying: its nodes revoke nothing, their leases
    run out. Returns the names of the nodes it hosted."""
    host = _host(index)
    pid = _host_pid(host)
    if pid is None:
        raise DevError(f"hollow host {index} is not running")
    send_signal(pid, signal.SIGKILL)
    if not wait_gone(pid):
        raise DevError(f"hollow host {index} (pid {pid}) still running after SIGKILL")
    return host_nodes(index)


@dataclass
class HollowStatus:
    index: int
    first: int
    count: int  # as started
    pid: int | None
    registered: int

    def line(self) -> str:
        process = f"running (pid {self.pid})" if self.pid else "stopped"
        names = f"{hollow_name(self.first)} … {hollow_name(self.first + self.count - 1)}"
        return (
            f"hollow-host-{self.index}  {self.count} nodes ({names})  process={process}  "
            f"registered {self.registered}"
        )


def hollow_status(nodes: dict[str, object], state: dict | None = None) -> list[HollowStatus]:
    """One per hollow host of this cluster ([] when it has none)."""
    state = load_state() if state is None else state
    out = []
    for host in state.get("hollow", {}).get("hosts", []):
        first, count = int(host["first"]), int(host["count"])
        names = {hollow_name(i) for i in range(first, first + count)}
        out.append(
            HollowStatus(
                index=int(host["index"]),
                first=first,
                count=count,
                pid=_host_pid(host),
                registered=len(names & nodes.keys()),
            )
        )
    return out
