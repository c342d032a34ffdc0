"""Failure drills on a running dev cluster, one node at a time: kill, stop, freeze, partition,
heal and start again.

Each drill takes a node name (node-N) of the cluster in state.json and raises DevError when it
cannot be done. `DRILLS` is what `flotilla dev <drill> NODE` offers: a new drill is a function
here plus its entry there.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from deploy.dev_layout import DevError, load_state, node_index, save_state, veth_name
from deploy.dev_network import set_link
from deploy.dev_processes import (
    agent_command,
    agent_pid,
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


def heal(name: str) -> None:
    """Undo partition and freeze."""
    state = _known(name)
    set_link(veth_name(node_index(name)), up=True)
    pid = agent_pid(name, state)
    if pid is not None:
        send_signal(pid, signal.SIGCONT)


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
    "heal": (heal, "undo partition and freeze"),
    "start": (start, "start the node's agent again"),
}
