"""What containers leave behind on the dev cluster: shims, mounts and cgroups, and removing them.

Found by path alone (the dev data root, the flotilla/node-N cgroups), so `down()` also cleans
up after agents that crashed or were killed with their containers still running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time

from deploy.dev_layout import NODE_RE, ROOT
from deploy.dev_processes import cmdline, send_signal

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


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


def _cgroup_roots() -> list[str]:
    """Every cgroup hierarchy flotilla may have used: v2's root, or each mounted v1 controller."""
    from runtime.cgroups import CGROUP_ROOT, detect_version, v1_mounts

    if detect_version() == 2:
        return [CGROUP_ROOT]
    return sorted(set(v1_mounts().values()))


def node_cgroups() -> list[str]:
    """The flotilla/node-N cgroup of every dev node, in every hierarchy."""
    out: list[str] = []
    for root in _cgroup_roots():
        base = os.path.join(root, "flotilla")
        with contextlib.suppress(OSError):
            out += [os.path.join(base, n) for n in os.listdir(base) if NODE_RE.match(n)]
    return out


def remove_cgroup_tree(top: str) -> None:
    """Kill what is left in a cgroup subtree (thawing it first), then rmdir bottom-up."""
    dirs = [d for d, _, _ in os.walk(top)]
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
        if not pids:
            break
        for p in pids:
            send_signal(p, signal.SIGKILL)
        time.sleep(0.05)
    for d in sorted(dirs, key=len, reverse=True):
        for _ in range(20):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)
