"""What containers leave behind on the dev cluster: shims, mounts and cgroups, and removing them.

Found by path alone (the dev data root, the flotilla/node-N cgroups), so `down()` also cleans
up after agents that crashed or were killed with their containers still running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time

from deploy.dev_layout import NODE_RE, ROOT
from deploy.dev_processes import cmdline, pids

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def node_shims(name: str) -> list[int]:
    """The shims of node `name`'s containers (their bundles are under its data root)."""
    root = os.path.join(ROOT, name) + "/"
    return [p for p in pids() if is_dev_shim(p) and any(a.startswith(root) for a in cmdline(p))]


def is_dev_shim(pid: int) -> bool:
    """A container shim whose bundle is under the dev data root."""
    args = cmdline(pid)
    return (
        bool(args)
        and "flotilla-shim" in os.path.basename(args[0])
        and any(a.startswith(ROOT + "/") for a in args[1:])
    )


# --------------------------------------------------------------------------- mounts


def mounts_under(root: str) -> list[str]:
    points: list[str] = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if point == root or point.startswith(root + "/"):
                    points.append(point)
    except OSError:
        return []
    return points


def unmount_under(root: str) -> None:
    # Deepest first; several passes because stacked mounts show up once per layer.
    for _ in range(10):
        points = sorted(set(mounts_under(root)), key=len, reverse=True)
        if not points:
            return
        for point in points:
            _libc.umount2(point.encode(), MNT_DETACH)


# --------------------------------------------------------------------------- cgroups


def cgroup_roots() -> list[str]:
    """Every cgroup hierarchy flotilla may have used: v2's root, or each mounted v1 controller."""
    from runtime.cgroups import CGROUP_ROOT, detect_version, v1_mounts

    if detect_version() == 2:
        return [CGROUP_ROOT]
    return sorted(set(v1_mounts().values()))


def remove_empty_parents() -> None:
    """The `flotilla` parent cgroups the agents made, once no node (nor anything else) uses
    them: rmdir fails on a parent still holding a child, which is then left alone."""
    for root in cgroup_roots():
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(root, "flotilla"))


def node_cgroups(name: str = "") -> list[str]:
    """The flotilla/node-N cgroup of every dev node (or only of `name`), in every hierarchy."""
    out: list[str] = []
    for root in cgroup_roots():
        base = os.path.join(root, "flotilla")
        with contextlib.suppress(OSError):
            out += [
                os.path.join(base, n)
                for n in os.listdir(base)
                if NODE_RE.match(n) and n == (name or n)
            ]
    return out


def remove_cgroup_tree(top: str) -> None:
    """Kill what is left in a cgroup subtree (thawing it first), then rmdir bottom-up."""
    from agent.drill_faults import kill_cgroup_tree  # late: `flotilla --help` loads no agent

    dirs = [d for d, _, _ in os.walk(top)]
    kill_cgroup_tree(top)
    for d in sorted(dirs, key=len, reverse=True):
        for _ in range(20):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)
