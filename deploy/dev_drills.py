"""Failure drills on a running dev cluster, one node at a time: kill, stop, freeze, partition,
etcd-outage, crash (the whole host), heal (back to healthy from any of them) and start again.

Each drill takes a node name (node-N) of the cluster in state.json and raises DevError when it
cannot be done. `DRILLS` is what `flotilla dev <drill> NODE` offers: a new drill is a function
here plus its entry there.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import ModuleType

from deploy.dev_cleanup import node_cgroups, node_shims
from deploy.dev_layout import (
    ETCD_PORT,
    HOST_IP,
    NETNS_DIR,
    DevError,
    load_state,
    node_index,
    save_state,
    veth_name,
)
from deploy.dev_network import link_up, set_link
from deploy.dev_processes import (
    agent_command,
    agent_pid,
    proc_state,
    send_signal,
    spawn_agent,
    wait_gone,
    wait_registered,
)


def _known(name: str) -> dict:
    """The cluster's state, once `name` is checked to be one of its nodes."""
    node_index(name)
    state = load_state()
    if name not in state.get("nodes", {}):
        raise DevError(f"{name} is not part of the dev cluster (is it up?)")
    return state


def _running_agent(name: str) -> int:
    pid = agent_pid(name, _known(name))
    if pid is None:
        raise DevError(f"{name}: agent is not running")
    return pid


def kill(name: str) -> None:
    """kill -9 the node's agent (its containers keep running)."""
    pid = _running_agent(name)
    send_signal(pid, signal.SIGKILL)
    wait_gone(pid)


def stop(name: str, timeout: float = 10.0) -> None:
    """SIGTERM the node's agent and wait for it to exit."""
    pid = _running_agent(name)
    send_signal(pid, signal.SIGTERM)
    send_signal(pid, signal.SIGCONT)
    if not wait_gone(pid, timeout):
        raise DevError(f"{name}: agent (pid {pid}) still running {timeout:.0f}s after SIGTERM")


def freeze(name: str) -> None:
    """SIGSTOP the agent: it stops heartbeating, so its lease runs out."""
    pid = _running_agent(name)
    send_signal(pid, signal.SIGSTOP)


def partition(name: str) -> None:
    """Cut the host off the underlay (etcd, other hosts): host side of its veth down."""
    _known(name)
    set_link(veth_name(node_index(name)), up=False)


def _faults() -> ModuleType:
    # Imported late: `flotilla --help` builds its parser from DRILLS and loads no agent code.
    from agent import drill_faults

    return drill_faults


def _in_netns(name: str) -> list[str]:
    return ["nsenter", f"--net={NETNS_DIR}/{name}"]


def etcd_outage(name: str) -> None:
    """This host alone loses etcd: its connections to etcd's client port are dropped (iptables
    in its netns); the other hosts, the manager and its peers still reach it and etcd."""
    _known(name)
    rules = _faults().etcd_rules([f"{HOST_IP}:{ETCD_PORT}"])
    try:
        _faults().add_rules(rules, _in_netns(name))
    except OSError as e:
        raise DevError(f"{name}: {e}") from e


def crash(name: str) -> None:
    """The whole host goes down: its agent, every shim and every process of its containers
    (cgroup flotilla/node-N) are SIGKILLed, and its link is cut so nothing of it answers."""
    _known(name)
    set_link(veth_name(node_index(name)), up=False)
    pid = agent_pid(name)
    if pid is not None:
        send_signal(pid, signal.SIGKILL)
    # Shims before their containers: a shim that saw its container die would record an exit.
    _faults().kill_pids(node_shims(name))
    for top in node_cgroups(name):
        _faults().kill_cgroup_tree(top)
    if pid is not None:
        wait_gone(pid)


def heal(name: str, timeout: float = 30.0) -> None:
    """Back to healthy from any drill: link up, drill firewall rules gone, the agent thawed, or
    started again when it is not running (then wait until it is registered)."""
    state = _known(name)
    veth = veth_name(node_index(name))
    if link_up(veth) is False:
        set_link(veth, up=True)
    _faults().remove_rules(_faults().drill_rules(_in_netns(name)), _in_netns(name))
    pid = agent_pid(name, state)
    if pid is not None:
        if proc_state(pid) == "T":
            send_signal(pid, signal.SIGCONT)
        return
    start(name, timeout=timeout)


def start(name: str, wait: bool = True, timeout: float = 30.0) -> object | None:
    """Start the node's agent again (after kill/stop); thaws it if frozen. Returns its record."""
    state = _known(name)
    node = state["nodes"][name]
    pid = agent_pid(name, state)
    since_ns = 0
    if pid is not None:
        send_signal(pid, signal.SIGCONT)
    else:
        since_ns = time.time_ns()
        i = node_index(name)
        node["pid"] = spawn_agent(name, node.get("cmd") or agent_command(i, node.get("labels", {})))
        save_state(state)
    if not wait:
        return None
    return wait_registered([name], timeout, since_ns)[name]


# `flotilla dev <drill> NODE`: the drill and its help line.
DRILLS: dict[str, tuple[Callable[[str], object], str]] = {
    "kill": (kill, "kill -9 the node's agent"),
    "stop": (stop, "SIGTERM the node's agent"),
    "freeze": (freeze, "SIGSTOP the node's agent"),
    "partition": (partition, "cut the node off the underlay (link down)"),
    "etcd-outage": (etcd_outage, "drop the node's connections to etcd (iptables in its netns)"),
    "crash": (crash, "the whole host goes down: agent, shims and containers killed, link cut"),
    "heal": (heal, "back to healthy from any drill: link up, thaw, start a dead agent"),
    "start": (start, "start the node's agent again"),
}
