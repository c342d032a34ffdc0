"""The one-machine dev cluster: etcd, N hosts as network namespaces, one agent per host.

Layout (root netns of whoever runs `up`):

    flt-underlay 10.99.0.1/24  bridge; etcd listens on 127.0.0.1:2379 and 10.99.0.1:2379
      flt-u-N  ── veth ──  eth0 10.99.0.(10+N)/24 in netns node-N (default route via .1)
    agent of node-N: `flotilla join` run with `nsenter --net=/run/netns/node-N`, own session,
    data root /var/lib/flotilla/dev/node-N, cgroup parent flotilla/node-N, log node-N.log

The manager runs in the root netns (`flotilla manage`, 127.0.0.1:2375, log manager.log); every
node gets the busybox test image (deploy/busybox_image.py) through its agent's ImageImport.

Agents are entered with nsenter and not `ip netns exec`: the latter unshares a private mount
namespace, which would hide the runtime's mounts (container netns files) from a restarted agent.

Everything is also discoverable by name and path, so `down()` cleans up after a crash even
when state.json is missing or stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deploy import etcd

ROOT = "/var/lib/flotilla/dev"
STATE = os.path.join(ROOT, "state.json")
BRIDGE = "flt-underlay"
HOST_IP = "10.99.0.1"
PREFIX = "/flotilla"
ETCD_PORT = 2379
AGENT_PORT = 4243
HEARTBEAT = "1s"
TTL = "5s"
NETNS_DIR = "/run/netns"
NODE_RE = re.compile(r"^node-(\d+)$")
MANAGER_ADDR = "127.0.0.1:2375"
# The manager also serves a unix socket: over TCP the docker CLI cannot detach (ctrl-p ctrl-q)
# from `run -it`/`attach` (its escape check misses the error TCPConn.ReadFrom wraps).
MANAGER_SOCKET = os.path.join(ROOT, "docker.sock")
BUSYBOX_REF = "busybox:latest"
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


# --------------------------------------------------------------------------- state


def _load_state() -> dict:
    try:
        with open(STATE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(state: dict) -> None:
    os.makedirs(ROOT, exist_ok=True)
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    os.replace(tmp, STATE)


def is_up() -> bool:
    return os.path.exists(STATE)


# --------------------------------------------------------------------------- processes


def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat (R, S, T, Z…), None if gone; reaps zombies."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _is_agent(pid: int, name: str) -> bool:
    """Guards against pid reuse: the pid must still be node `name`'s agent."""
    args = _cmdline(pid)
    return "join" in args and os.path.join(ROOT, name) in args


def _alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z", "X")


def _agent_pid(name: str, state: dict | None = None) -> int | None:
    """The running agent of `name`: from the state file, else by scanning /proc."""
    state = _load_state() if state is None else state
    pid = state.get("nodes", {}).get(name, {}).get("pid")
    if isinstance(pid, int) and _alive(pid) and _is_agent(pid, name):
        return pid
    for p in _pids():
        if _is_agent(p, name) and _alive(p) and "nsenter" not in (_cmdline(p) or [""])[0]:
            return p
    return None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _kill_all(pids: Iterable[int], grace: float = 5.0) -> None:
    """SIGTERM (and SIGCONT, for frozen ones) then SIGKILL what is left after `grace`."""
    pids = [p for p in pids if p != os.getpid() and _alive(p)]
    for p in pids:
        _signal(p, signal.SIGTERM)
        _signal(p, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if _alive(p):
            _signal(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.02)


# --------------------------------------------------------------------------- network


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise DevError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def _netns_list() -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted((n for n in names if NODE_RE.match(n)), key=node_index)


def _links() -> dict[str, bool]:
    """Links of the current netns and whether each is administratively up.

    Asks netlink (`ip`), not /sys/class/net: sysfs shows the netns it was mounted in, which is
    not ours when the caller unshared only its network namespace (as the test session does).
    """
    res = _ip("-j", "link", "show", check=False)
    try:
        links = json.loads(res.stdout or "[]")
    except ValueError:
        return {}
    return {link["ifname"]: "UP" in link.get("flags", []) for link in links if "ifname" in link}


def _link_exists(name: str) -> bool:
    return name in _links()


def _link_up(name: str) -> bool | None:
    return _links().get(name)


def _underlay_veths() -> list[str]:
    return [n for n in _links() if re.match(r"^flt-u-\d+$", n)]


def _make_underlay() -> None:
    if not _link_exists(BRIDGE):
        _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("addr", "replace", f"{HOST_IP}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def _make_host(i: int) -> None:
    name, veth = node_name(i), veth_name(i)
    _ip("netns", "add", name)
    ns = ["-n", name]
    _ip(*ns, "link", "set", "lo", "up")
    _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
    _ip("link", "set", veth, "master", BRIDGE)
    _ip("link", "set", veth, "up")
    _ip(*ns, "addr", "add", f"{node_ip(i)}/24", "dev", "eth0")
    _ip(*ns, "link", "set", "eth0", "up")
    _ip(*ns, "route", "add", "default", "via", HOST_IP)


# --------------------------------------------------------------------------- mounts, cgroups

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


def _mounts_under(root: str) -> list[str]:
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


def _unmount_under(root: str) -> None:
    # Deepest first; several passes because stacked mounts show up once per layer.
    for _ in range(10):
        points = sorted(set(_mounts_under(root)), key=len, reverse=True)
        if not points:
            return
        for point in points:
            _libc.umount2(point.encode(), MNT_DETACH)


def _cgroup_roots() -> list[str]:
    """Every cgroup hierarchy flotilla may have used: v2's root, or each mounted v1 controller."""
    from runtime.cgroups import CGROUP_ROOT, detect_version, v1_mounts

    if detect_version() == 2:
        return [CGROUP_ROOT]
    return sorted(set(v1_mounts().values()))


def _node_cgroups() -> list[str]:
    out: list[str] = []
    for root in _cgroup_roots():
        base = os.path.join(root, "flotilla")
        with contextlib.suppress(OSError):
            out += [os.path.join(base, n) for n in os.listdir(base) if NODE_RE.match(n)]
    return out


def _remove_cgroup_tree(top: str) -> None:
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
            _signal(p, signal.SIGKILL)
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


# --------------------------------------------------------------------------- agents


METRICS_PORT = 9323  # dockerd's customary metrics port


def agent_command(i: int, labels: dict[str, str]) -> list[str]:
    name = node_name(i)
    cmd = [
        "nsenter",
        f"--net={NETNS_DIR}/{name}",
        sys.executable,
        "-m",
        "deploy.cli",
        "join",
        "--etcd",
        f"{HOST_IP}:{ETCD_PORT}",
        "--advertise",
        f"{node_ip(i)}:{AGENT_PORT}",
        "--name",
        name,
        "--data-root",
        os.path.join(ROOT, name),
        "--heartbeat",
        HEARTBEAT,
        "--ttl",
        TTL,
        "--metrics",
        f"{node_ip(i)}:{METRICS_PORT}",
    ]
    for k, v in sorted(labels.items()):
        cmd += ["--label", f"{k}={v}"]
    return cmd


def _spawn_agent(name: str, cmd: list[str]) -> int:
    os.makedirs(os.path.join(ROOT, name), exist_ok=True)
    env = dict(os.environ)
    # The agent must import this checkout even when it is not pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(os.path.join(ROOT, f"{name}.log"), "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=REPO,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    # nsenter execs the interpreter in place, so this pid is the agent's.
    return proc.pid


def _log_tail(name: str, lines: int = 15) -> str:
    try:
        with open(os.path.join(ROOT, f"{name}.log"), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


async def _registered_async(endpoints: list[str]) -> dict[str, object]:
    from agent.nodes import list_nodes

    return {n.name: n for n in await list_nodes(endpoints, PREFIX)}


def registered(timeout: float = 5.0) -> dict[str, object]:
    """Node records in the dev etcd, by node name ({} when etcd is unreachable)."""
    import agent.nodes  # noqa: F401 - a missing module is a bug, not "nothing registered"

    async def go() -> dict[str, object]:
        return await asyncio.wait_for(_registered_async([etcd_endpoint()]), timeout)

    try:
        return asyncio.run(go())
    except Exception:
        return {}


def wait_registered(
    names: Iterable[str], timeout: float = 30.0, since_ns: int = 0
) -> dict[str, object]:
    """Wait until every node in `names` has a record in etcd; raise DevError with log tails.

    With `since_ns`, only records of agents started after it count: a killed agent's record
    stays until its lease runs out, and must not be mistaken for its successor's.
    """
    want = set(names)
    deadline = time.monotonic() + timeout
    while True:
        nodes = {
            name: rec
            for name, rec in registered().items()
            if int(getattr(rec, "started_at_ns", 0)) >= since_ns
        }
        if want <= nodes.keys():
            return nodes
        dead = sorted(n for n in want - nodes.keys() if _agent_pid(n) is None)
        if dead:
            tails = "\n".join(f"--- {n}.log\n{_log_tail(n)}" for n in dead)
            raise DevError(f"agent exited before registering: {', '.join(dead)}\n{tails}")
        if time.monotonic() > deadline:
            missing = sorted(want - nodes.keys(), key=node_index)
            tails = "\n".join(f"--- {n}.log\n{_log_tail(n)}" for n in missing)
            raise DevError(f"not registered after {timeout:.0f}s: {', '.join(missing)}\n{tails}")
        time.sleep(0.2)


def wait_unregistered(name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while name in registered():
        if time.monotonic() > deadline:
            raise DevError(f"{name} still registered after {timeout:.0f}s")
        time.sleep(0.2)


# --------------------------------------------------------------------------- manager, image


def docker_host() -> str:
    return f"tcp://{MANAGER_ADDR}"


def manager_command(extra: Sequence[str] = ()) -> list[str]:
    """`flotilla manage` for the dev cluster; `extra`: more flags (e.g. `--strategy binpack`)."""
    cli = [sys.executable, "-m", "deploy.cli", "manage", discovery_url(), "-H", docker_host()]
    return [*cli, "-H", f"unix://{MANAGER_SOCKET}", *extra]


def _is_manager(pid: int) -> bool:
    args = _cmdline(pid)
    return "deploy.cli" in args and "manage" in args and discovery_url() in args


def _manager_pids(state: dict | None = None) -> set[int]:
    state = _load_state() if state is None else state
    pids = {p for p in _pids() if _is_manager(p)}
    pid = state.get("manager", {}).get("pid")
    if isinstance(pid, int) and _is_manager(pid):
        pids.add(pid)
    return {p for p in pids if _alive(p)}


def start_manager(extra: Sequence[str] = (), timeout: float = 30.0) -> int:
    """Start `flotilla manage` on 127.0.0.1:2375 in this netns; wait until it answers /_ping."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    with open(os.path.join(ROOT, "manager.log"), "ab") as log:
        proc = subprocess.Popen(
            manager_command(extra),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=REPO,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    state = _load_state()
    state["manager"] = {"pid": proc.pid, "addr": MANAGER_ADDR}
    _save_state(state)
    deadline = time.monotonic() + timeout
    while not manager_healthy():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DevError(
                f"manager did not come up on {MANAGER_ADDR}\n--- manager.log\n"
                f"{_log_tail('manager')}"
            )
        time.sleep(0.1)
    return proc.pid


def manager_healthy(timeout: float = 1.0) -> bool:
    import http.client

    host, _, port = MANAGER_ADDR.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop_manager() -> None:
    _kill_all(_manager_pids())


async def _import_image(addr: str, tar_path: str) -> None:
    from proto import agent_pb2 as pb
    from proto.rpc import agent_client

    async def inputs():  # noqa: ANN202 - an async generator of ImageImportInput
        yield pb.ImageImportInput(
            options=pb.ImageImportOptions(reference=BUSYBOX_REF, changes=['CMD ["sh"]'])
        )
        with open(tar_path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield pb.ImageImportInput(data=chunk)

    stub = agent_client(addr)
    try:
        await stub.ImageImport(inputs(), timeout=60)
    finally:
        await stub.channel.close()  # type: ignore[attr-defined]


async def _copy_image(src_addr: str, dst_addrs: list[str]) -> None:
    """`docker save` the image on one agent and `docker load` it into the others.

    The test image is ~2 MiB: it is read once into memory and then sent to every node.
    """
    from proto import agent_pb2 as pb
    from proto.rpc import agent_client

    src = agent_client(src_addr)
    try:
        call = src.ImageSave(pb.ImageSaveRequest(refs=[BUSYBOX_REF]), timeout=60)
        chunks = [chunk async for chunk in call]
    finally:
        await src.channel.close()  # type: ignore[attr-defined]

    async def load(addr: str) -> None:
        async def body():  # noqa: ANN202 - an async generator of DataChunk
            for chunk in chunks:
                yield chunk

        dst = agent_client(addr)
        try:
            await dst.ImageLoad(body(), timeout=60)
        finally:
            await dst.channel.close()  # type: ignore[attr-defined]

    await asyncio.gather(*(load(addr) for addr in dst_addrs))


def import_busybox(addrs: Iterable[str]) -> None:
    """Import the busybox test image into every agent at `addrs`, concurrently."""
    import tempfile

    from deploy.busybox_image import build_rootfs_tar

    with tempfile.TemporaryDirectory(prefix="flt-dev-bb-") as tmp:
        tar = build_rootfs_tar(os.path.join(tmp, "busybox.tar"))

        async def go() -> None:
            # One import, then copies: separate imports would give each node its own image
            # ID (the creation time is part of it) and `docker images` would list it N times.
            first, *others = list(addrs)
            await _import_image(first, tar)
            if others:
                await _copy_image(first, others)

        try:
            asyncio.run(go())
        except Exception as e:  # noqa: BLE001 - reported as a dev-cluster failure
            raise DevError(f"cannot import {BUSYBOX_REF} into the nodes: {e}") from e


# --------------------------------------------------------------------------- public API


@dataclass
class NodeStatus:
    name: str
    netns: bool
    agent: str  # running, stopped, frozen
    pid: int | None
    link: str  # up, down, missing
    registered: bool
    node_id: str = ""
    addr: str = ""

    def line(self) -> str:
        reg = f"registered {self.node_id}" if self.registered else "not registered"
        return (
            f"{self.name}  netns={'yes' if self.netns else 'no'}  agent={self.agent}"
            f"{f' (pid {self.pid})' if self.pid else ''}  link={self.link}  {reg}"
        )


@dataclass
class ClusterStatus:
    etcd: bool
    nodes: list[NodeStatus]
    manager: bool = False

    def lines(self) -> list[str]:
        out = [f"etcd  {etcd_endpoint()}  {'up' if self.etcd else 'down'}"]
        out.append(f"manager  {MANAGER_ADDR}  {'up' if self.manager else 'down'}")
        return out + [n.line() for n in self.nodes]


def up(nodes: int = 3, labels: Labels | None = None, timeout: float = 30.0) -> dict[str, object]:
    """Bring up etcd and `nodes` hosts with their agents; return their node records by name."""
    if nodes < 1 or nodes > 200:
        raise DevError("--nodes must be between 1 and 200")
    labels = labels or {}
    for name in labels:
        if node_index(name) >= nodes:
            raise DevError(f"labels for {name}, but the cluster has only {nodes} nodes")
    down()
    os.makedirs(ROOT, exist_ok=True)
    state: dict = {"nodes": {}, "prefix": PREFIX}
    _save_state(state)
    try:
        _make_underlay()
        start_etcd()
        state = _load_state()
        for i in range(nodes):
            name = node_name(i)
            _make_host(i)
            node_labels = labels.get(name, {})
            cmd = agent_command(i, node_labels)
            state["nodes"][name] = {"ip": node_ip(i), "labels": node_labels, "cmd": cmd}
            state["nodes"][name]["pid"] = _spawn_agent(name, cmd)
            _save_state(state)
        records = wait_registered(state["nodes"], timeout)
        import_busybox(str(getattr(r, "addr", "")) for r in records.values())
        start_manager(timeout=timeout)
        return records
    except BaseException:
        # A half-built cluster is worse than none; its logs are kept in /tmp for the post-mortem.
        _keep_logs_then_down()
        raise


def _keep_logs_then_down() -> None:
    saved = "/tmp/flotilla-dev-failed-logs"
    shutil.rmtree(saved, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.makedirs(saved)
        for f in os.listdir(ROOT):
            if f.endswith(".log"):
                shutil.copy(os.path.join(ROOT, f), saved)
    down()


def down() -> None:
    """Take everything down; works from any leftover state (idempotent, crash-safe)."""
    state = _load_state()
    names = set(state.get("nodes", {})) | set(_netns_list())
    # 0. The manager, so it stops talking to agents that are about to go.
    _kill_all(_manager_pids(state))
    # 1. Agents, and anything else living in the hosts' netns (shims, exec'd helpers).
    pids: set[int] = set()
    for name in names:
        pid = _agent_pid(name, state)
        if pid:
            pids.add(pid)
    for p in _pids():
        args = _cmdline(p)
        if "join" in args and any(a.startswith(ROOT + "/node-") for a in args):
            pids.add(p)
    for name in _netns_list():
        res = _ip("netns", "pids", name, check=False)
        pids |= {int(x) for x in res.stdout.split() if x.isdigit()}
    _kill_all(pids)
    # 2. Container leftovers: shims whose bundle is ours, mounts, cgroups.
    shims = [p for p in _pids() if _is_dev_shim(p)]
    _kill_all(shims, grace=0.5)
    for cg in _node_cgroups():
        _remove_cgroup_tree(cg)
    # 3. etcd.
    stop_etcd()
    # 4. Network: host netns, veths, bridge.
    for name in _netns_list():
        _ip("netns", "del", name, check=False)
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(NETNS_DIR, name))
    for veth in _underlay_veths():
        _ip("link", "del", veth, check=False)
    if _link_exists(BRIDGE):
        _ip("link", "del", BRIDGE, check=False)
    # 5. Files.
    _unmount_under(ROOT)
    shutil.rmtree(ROOT, ignore_errors=True)


def _is_dev_shim(pid: int) -> bool:
    args = _cmdline(pid)
    return (
        bool(args)
        and "flotilla-shim" in os.path.basename(args[0])
        and any(a.startswith(ROOT + "/") for a in args[1:])
    )


def _is_dev_etcd(pid: int) -> bool:
    args = _cmdline(pid)
    return bool(args) and os.path.basename(args[0]) == "etcd" and os.path.join(ROOT, "etcd") in args


def start_etcd(timeout: float = 20.0) -> None:
    """Start the dev etcd (its data dir survives stop_etcd, so registrations can recover)."""
    if _etcd_pids():
        return
    url = f"http://{etcd_endpoint()}"
    if etcd.healthy(url):
        raise DevError(f"another etcd already serves {url} (Debian's service? systemctl stop etcd)")
    proc = etcd.launch(
        os.path.join(ROOT, "etcd"),
        [f"http://127.0.0.1:{ETCD_PORT}", f"http://{HOST_IP}:{ETCD_PORT}"],
        "http://127.0.0.1:2380",
        os.path.join(ROOT, "etcd.log"),
    )
    state = _load_state()
    state["etcd"] = {"pid": proc.pid}
    _save_state(state)
    try:
        etcd.wait_healthy(url, timeout, proc)
    except (RuntimeError, TimeoutError) as e:
        with open(os.path.join(ROOT, "etcd.log"), errors="replace") as f:
            tail = "".join(f.readlines()[-10:])
        raise DevError(f"{e}\n--- etcd.log\n{tail}") from e


def stop_etcd() -> None:
    """Stop the dev etcd, for outage drills (the agents keep running and must re-register)."""
    _kill_all(_etcd_pids())


def _etcd_pids() -> set[int]:
    pids = {p for p in _pids() if _is_dev_etcd(p)}
    pid = _load_state().get("etcd", {}).get("pid")
    if isinstance(pid, int) and _is_dev_etcd(pid):
        pids.add(pid)
    return {p for p in pids if _alive(p)}


def status() -> ClusterStatus:
    state = _load_state()
    names = sorted(set(state.get("nodes", {})) | set(_netns_list()), key=node_index)
    etcd_up = etcd.healthy(f"http://{etcd_endpoint()}", timeout=1.0)
    nodes = registered() if etcd_up else {}
    out: list[NodeStatus] = []
    for name in names:
        pid = _agent_pid(name, state)
        st = proc_state(pid) if pid else None
        agent = "stopped" if st is None else ("frozen" if st in ("T", "t") else "running")
        link = _link_up(veth_name(node_index(name)))
        rec = nodes.get(name)
        out.append(
            NodeStatus(
                name=name,
                netns=os.path.exists(os.path.join(NETNS_DIR, name)),
                agent=agent,
                pid=pid,
                link="missing" if link is None else ("up" if link else "down"),
                registered=rec is not None,
                node_id=str(getattr(rec, "id", "")),
                addr=str(getattr(rec, "addr", "")),
            )
        )
    return ClusterStatus(etcd=etcd_up, nodes=out, manager=manager_healthy())


def _known(name: str) -> dict:
    node_index(name)
    state = _load_state()
    if name not in state.get("nodes", {}):
        raise DevError(f"{name} is not part of the dev cluster (is it up?)")
    return state


def _running_agent(name: str) -> int:
    pid = _agent_pid(name, _known(name))
    if pid is None:
        raise DevError(f"{name}: agent is not running")
    return pid


def kill(name: str) -> None:
    """kill -9 the node's agent (its containers keep running)."""
    pid = _running_agent(name)
    _signal(pid, signal.SIGKILL)
    _wait_gone(pid)


def stop(name: str, timeout: float = 10.0) -> None:
    """SIGTERM the node's agent and wait for it to exit."""
    pid = _running_agent(name)
    _signal(pid, signal.SIGTERM)
    _signal(pid, signal.SIGCONT)
    if not _wait_gone(pid, timeout):
        raise DevError(f"{name}: agent (pid {pid}) still running {timeout:.0f}s after SIGTERM")


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def freeze(name: str) -> None:
    """SIGSTOP the agent: it stops heartbeating, so its lease runs out."""
    pid = _running_agent(name)
    _signal(pid, signal.SIGSTOP)


def partition(name: str) -> None:
    """Cut the host off the underlay (etcd, other hosts): host side of its veth down."""
    _known(name)
    _ip("link", "set", veth_name(node_index(name)), "down")


def heal(name: str) -> None:
    """Undo partition and freeze."""
    state = _known(name)
    _ip("link", "set", veth_name(node_index(name)), "up")
    pid = _agent_pid(name, state)
    if pid is not None:
        _signal(pid, signal.SIGCONT)


def start(name: str, wait: bool = True, timeout: float = 30.0) -> object | None:
    """Start the node's agent again (after kill/stop); thaws it if frozen. Returns its record."""
    state = _known(name)
    node = state["nodes"][name]
    pid = _agent_pid(name, state)
    since_ns = 0
    if pid is not None:
        _signal(pid, signal.SIGCONT)
    else:
        since_ns = time.time_ns()
        i = node_index(name)
        node["pid"] = _spawn_agent(
            name, node.get("cmd") or agent_command(i, node.get("labels", {}))
        )
        _save_state(state)
    if not wait:
        return None
    return wait_registered([name], timeout, since_ns)[name]
