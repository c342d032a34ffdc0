"""The one-machine dev cluster: etcd, N hosts as network namespaces, one agent per host, and
the manager. This module is its public API (`from deploy import devcluster`): up, down, status
and the names callers use, which live in the dev_* modules beside it:

    deploy/dev_layout.py     names, addresses, paths, state.json, logs
    deploy/dev_network.py    the underlay bridge, the hosts' netns and veths
    deploy/dev_processes.py  agents, manager, etcd: find, signal, start, wait for registration
    deploy/dev_cleanup.py    container leftovers: shims, mounts, cgroups
    deploy/dev_drills.py     kill, stop, freeze, partition, etcd_outage, crash, heal, start
                             (one node at a time)
    deploy/dev_hollow.py     hollow nodes (`--hollow N`): `flotilla hollow` processes, one per
                             `--hollow-per-host` nodes; `kill_hollow(K)` kills host K hard

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
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from deploy import etcd
from deploy.dev_certs import dev_tls
from deploy.dev_cleanup import (
    is_dev_shim,
    node_cgroups,
    remove_cgroup_tree,
    remove_empty_parents,
    unmount_under,
)
from deploy.dev_drills import crash, etcd_outage, freeze, heal, kill, partition, start, stop
from deploy.dev_hollow import (
    HollowStatus,
    hollow_pids,
    hollow_status,
    start_hollow,
    stop_hollow,
)
from deploy.dev_hollow import kill_host as kill_hollow
from deploy.dev_layout import (
    BRIDGE,
    MANAGER_ADDR,
    MANAGER_SOCKET,
    NETNS_DIR,
    PREFIX,
    REPO,
    ROOT,
    STATE,
    DevError,
    Labels,
    discovery_url,
    docker_host,
    etcd_endpoint,
    is_up,
    load_state,
    node_index,
    node_ip,
    node_name,
    save_state,
    veth_name,
)
from deploy.dev_network import (
    link_up,
    make_host,
    make_underlay,
    netns_list,
    netns_pids,
    remove_network,
)
from deploy.dev_processes import (
    agent_command,
    agent_pid,
    any_agent_pids,
    etcd_pids,
    kill_all,
    manager_command,
    manager_healthy,
    manager_pids,
    pids,
    proc_state,
    registered,
    spawn_agent,
    start_etcd,
    start_manager,
    stop_etcd,
    stop_manager,
    wait_registered,
    wait_unregistered,
)

# The names callers reach through `devcluster.` (tests, bench, deploy/cli.py).
__all__ = [
    "BRIDGE",
    "BUSYBOX_REF",
    "MANAGER_ADDR",
    "MANAGER_SOCKET",
    "PREFIX",
    "REPO",
    "ROOT",
    "STATE",
    "ClusterStatus",
    "DevError",
    "NodeStatus",
    "agent_command",
    "crash",
    "discovery_url",
    "dev_tls",
    "docker_host",
    "down",
    "etcd_endpoint",
    "etcd_outage",
    "freeze",
    "heal",
    "import_busybox",
    "is_up",
    "kill",
    "kill_hollow",
    "manager_command",
    "manager_healthy",
    "node_index",
    "node_ip",
    "node_name",
    "only_leftovers",
    "partition",
    "proc_state",
    "registered",
    "start",
    "start_etcd",
    "start_manager",
    "status",
    "stop",
    "stop_etcd",
    "stop_manager",
    "up",
    "wait_unregistered",
]

BUSYBOX_REF = "busybox:latest"


# --------------------------------------------------------------------------- the test image


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

    stub = agent_client(addr, dev_tls())
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

    src = agent_client(src_addr, dev_tls())
    try:
        call = src.ImageSave(pb.ImageSaveRequest(refs=[BUSYBOX_REF]), timeout=60)
        chunks = [chunk async for chunk in call]
    finally:
        await src.channel.close()  # type: ignore[attr-defined]

    async def load(addr: str) -> None:
        async def body():  # noqa: ANN202 - an async generator of DataChunk
            for chunk in chunks:
                yield chunk

        dst = agent_client(addr, dev_tls())
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


# --------------------------------------------------------------------------- up, down, status


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
    hollow: list[HollowStatus] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"etcd  {etcd_endpoint()}  {'up' if self.etcd else 'down'}"]
        out.append(f"manager  {MANAGER_ADDR}  {'up' if self.manager else 'down'}")
        out += [n.line() for n in self.nodes]
        return out + [h.line() for h in self.hollow]


def up(
    nodes: int = 3,
    labels: Labels | None = None,
    timeout: float = 30.0,
    manager_args: Sequence[str] = (),
    hollow: int = 0,
    hollow_per_host: int = 0,
    hollow_shared_lease: bool = False,
) -> dict[str, object]:
    """Bring up etcd, `nodes` hosts with their agents, `hollow` hollow nodes (in processes of
    `hollow_per_host` nodes each, 0: one process; deploy/dev_hollow.py) and the manager; return
    the node records by name. `manager_args`: more `flotilla manage` flags (`--strategy
    binpack`, `--filter …`), as Swarm's integration tests start theirs."""
    if nodes < (0 if hollow else 1) or nodes > 200:
        raise DevError("--nodes must be between 1 and 200 (0 with --hollow)")
    labels = labels or {}
    for name in labels:
        if node_index(name) >= nodes:
            raise DevError(f"labels for {name}, but the cluster has only {nodes} nodes")
    down()
    os.makedirs(ROOT, exist_ok=True)
    state: dict = {"nodes": {}, "prefix": PREFIX}
    save_state(state)
    try:
        make_underlay()
        start_etcd()
        state = load_state()
        for i in range(nodes):
            name = node_name(i)
            make_host(i)
            node_labels = labels.get(name, {})
            cmd = agent_command(i, node_labels)
            state["nodes"][name] = {"ip": node_ip(i), "labels": node_labels, "cmd": cmd}
            state["nodes"][name]["pid"] = spawn_agent(name, cmd)
            save_state(state)
        records = wait_registered(state["nodes"], timeout)
        if records:
            import_busybox(str(getattr(r, "addr", "")) for r in records.values())
        if hollow:
            # Hollow nodes have their busybox from the start (runtime/hollow_images.py).
            records |= start_hollow(
                hollow, timeout + hollow * 0.05, hollow_per_host, hollow_shared_lease
            )
        start_manager(manager_args, timeout=timeout)
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
    state = load_state()
    names = set(state.get("nodes", {})) | set(netns_list())
    # 0. The manager, so it stops talking to agents that are about to go.
    kill_all(manager_pids(state))
    # 1. Hollow nodes (they deregister), agents, and anything else living in the hosts' netns
    # (shims, exec'd helpers).
    stop_hollow(state)
    victims = {pid for pid in (agent_pid(name, state) for name in names) if pid}
    victims |= any_agent_pids()
    for name in netns_list():
        victims |= netns_pids(name)
    kill_all(victims)
    # 2. Container leftovers: shims whose bundle is ours, mounts, cgroups.
    kill_all([p for p in pids() if is_dev_shim(p)], grace=0.5)
    for cg in node_cgroups():
        remove_cgroup_tree(cg)
    remove_empty_parents()
    # 3. etcd.
    stop_etcd()
    # 4. Network: host netns, veths, bridge.
    remove_network()
    # 5. Files.
    unmount_under(ROOT)
    shutil.rmtree(ROOT, ignore_errors=True)


def only_leftovers() -> bool:
    """Whether what is here of a dev cluster is only remains (state file, netns, mounts) whose
    processes are all gone — a run killed half-way — so `down()` may clear it without taking
    a live cluster from anyone."""
    state = load_state()
    return not (manager_pids(state) or any_agent_pids() or hollow_pids(state) or etcd_pids())


def status() -> ClusterStatus:
    state = load_state()
    names = sorted(set(state.get("nodes", {})) | set(netns_list()), key=node_index)
    etcd_up = etcd.healthy(f"http://{etcd_endpoint()}", timeout=1.0)
    nodes = registered() if etcd_up else {}
    out: list[NodeStatus] = []
    for name in names:
        pid = agent_pid(name, state)
        st = proc_state(pid) if pid else None
        agent = "stopped" if st is None else ("frozen" if st in ("T", "t") else "running")
        link = link_up(veth_name(node_index(name)))
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
    return ClusterStatus(
        etcd=etcd_up, nodes=out, manager=manager_healthy(), hollow=hollow_status(nodes, state)
    )
