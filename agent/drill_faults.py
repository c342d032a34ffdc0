"""The faults a drill injects on one host, and undoing them: iptables rules (partition, etcd
outage), killing every process of a cgroup tree (a host crash), and the watchdog that undoes a
fault after a bounded time even when the agent that injected it is frozen or dead.

Used by the agent's `Drill` RPC (agent/service_drills.py) on its own host and by the dev
cluster's drills (deploy/dev_drills.py) inside a node's network namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

KINDS = ("kill", "crash", "freeze", "partition", "etcd-outage")
MAX_DURATION_S = 300.0  # a drill's fault never lasts longer than this, whatever was asked
DEFAULT_DURATION_S = 30.0
COMMENT = "flotilla-drill"  # tags every rule a drill adds, so heal can find and remove them

Rule = list[str]  # iptables arguments after the chain action (-I/-D)


def bounded_duration(duration_s: float) -> float:
    """The fault's length: the default for 0 or less, never more than MAX_DURATION_S."""
    if duration_s <= 0:
        return DEFAULT_DURATION_S
    return min(duration_s, MAX_DURATION_S)


# --------------------------------------------------------------------------- iptables


def partition_rules() -> list[Rule]:
    """Drop everything in and out of this network namespace but loopback (also forwarded
    container traffic): the host is cut off from etcd, the manager and its peers."""
    tag = ["-m", "comment", "--comment", COMMENT, "-j", "DROP"]
    return [
        ["INPUT", "!", "-i", "lo", *tag],
        ["OUTPUT", "!", "-o", "lo", *tag],
        ["FORWARD", *tag],
    ]


def etcd_rules(endpoints: Iterable[str]) -> list[Rule]:
    """Drop this host's connections to every etcd client endpoint ("host:port")."""
    rules: list[Rule] = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        addrs = sorted({ai[4][0] for ai in socket.getaddrinfo(host, int(port), socket.AF_INET)})
        for addr in addrs:
            rules.append(
                ["OUTPUT", "-p", "tcp", "-d", addr, "--dport", port]
                + ["-m", "comment", "--comment", COMMENT, "-j", "DROP"]
            )
    return rules


def iptables(action: str, rule: Rule, prefix: Sequence[str] = ()) -> None:
    """`iptables -w <action> <rule>` (action -I or -D); `prefix` runs it elsewhere (nsenter)."""
    res = subprocess.run(
        [*prefix, "iptables", "-w", action, *rule], capture_output=True, text=True, timeout=30
    )
    if res.returncode != 0:
        raise OSError(f"iptables {action} {' '.join(rule)}: {res.stderr.strip()}")


def add_rules(rules: Sequence[Rule], prefix: Sequence[str] = ()) -> None:
    """Insert every rule; on a failure, remove those already added (nothing half-made)."""
    done: list[Rule] = []
    try:
        for rule in rules:
            iptables("-I", rule, prefix)
            done.append(rule)
    except OSError:
        remove_rules(done, prefix)
        raise


def remove_rules(rules: Sequence[Rule], prefix: Sequence[str] = ()) -> None:
    """Delete every rule (one missing is fine: heal may run twice)."""
    for rule in rules:
        with contextlib.suppress(OSError):
            iptables("-D", rule, prefix)


def drill_rules(prefix: Sequence[str] = ()) -> list[Rule]:
    """Every rule a drill left in this netns (found by its comment), for heal."""
    res = subprocess.run(
        [*prefix, "iptables", "-w", "-S"], capture_output=True, text=True, timeout=30
    )
    rules: list[Rule] = []
    for line in res.stdout.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == "-A" and COMMENT in words:
            rules.append([w.strip('"') for w in words[1:]])
    return rules


# --------------------------------------------------------------------------- a host crash


def kill_cgroup_tree(top: str, thaw: bool = True) -> None:
    """SIGKILL every process in cgroup `top` and below until none is left (thawing it first:
    a frozen cgroup's processes die only once thawed)."""
    dirs = [d for d, _, _ in os.walk(top)]
    if thaw:
        for d in dirs:
            with contextlib.suppress(OSError), open(os.path.join(d, "freezer.state"), "w") as f:
                f.write("THAWED")
            with contextlib.suppress(OSError), open(os.path.join(d, "cgroup.freeze"), "w") as f:
                f.write("0")
    for _ in range(50):
        pids: set[int] = set()
        for d in dirs:
            with contextlib.suppress(OSError), open(os.path.join(d, "cgroup.procs")) as f:
                pids |= {int(x) for x in f.read().split()}
        pids.discard(os.getpid())
        if not pids:
            return
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.05)


def kill_pids(pids: Iterable[int]) -> None:
    for p in pids:
        if p > 1 and p != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


# --------------------------------------------------------------------------- the watchdog


def start_watchdog(after_s: float, cont_pid: int = 0, rules: Sequence[Rule] = ()) -> int:
    """Start a process, in its own session, that after `after_s` sends SIGCONT to `cont_pid`
    and removes `rules`: it outlives a frozen or killed agent. Returns its pid."""
    spec = json.dumps({"after_s": after_s, "cont_pid": cont_pid, "rules": list(rules)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.drill_faults", spec],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    return proc.pid


def _watchdog(spec: dict) -> None:
    time.sleep(float(spec["after_s"]))
    remove_rules(spec.get("rules", []))
    if spec.get("cont_pid"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(spec["cont_pid"]), signal.SIGCONT)


if __name__ == "__main__":
    _watchdog(json.loads(sys.argv[1]))
