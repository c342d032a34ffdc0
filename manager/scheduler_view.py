"""The scheduler's picture of the cluster (one NodeInfo per live node, with its containers and
images), kept from one decision to the next: only the nodes whose record, containers or images
changed since the last decision are brought up to date, so a decision costs what the changed
nodes cost, not a rebuild of 1,000 nodes and 30,000 containers. Keeping the same NodeInfo
objects is also what lets the scheduler's rank index (manager/scheduler/index.py) and its soft
verdict memo re-score only the nodes that changed."""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import TYPE_CHECKING

from manager.scheduler import ContainerInfo, NodeInfo
from proto.records_pb2 import ContainerStatus, NodeRecord

if TYPE_CHECKING:
    from manager.cluster import Cluster, Placement

_NO_IMAGES: frozenset[str] = frozenset()
RUNNING_STATES = ("running", "paused", "restarting")


def container_info(cid: str, st: ContainerStatus | None, placed: Placement | None) -> ContainerInfo:
    """One container as the scheduler counts it: the node's status for what it is, our own
    placement (create body, then the node's HostConfig) for what it reserves."""
    return ContainerInfo(
        id=cid,
        name=(st.name if st else placed.name if placed else ""),
        image=(st.image if st else placed.image if placed else ""),
        image_id=st.image_id if st else "",
        labels=dict(st.labels) if st else dict(placed.labels if placed else {}),
        running=(st.state in RUNNING_STATES) if st else True,
        cpu_shares=placed.cpu_shares if placed else 0,
        nano_cpus=placed.nano_cpus if placed else 0,
        memory=placed.memory if placed else 0,
        host_ports=list(placed.host_ports) if placed else [],
        network_mode=placed.network_mode if placed else "default",
    )


class SchedulerView:
    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._infos: dict[str, NodeInfo] = {}
        self._records: dict[str, NodeRecord] = {}  # the record each NodeInfo was last set from
        self._order: list[str] | None = None  # the cluster's node order the list was built in
        self._list: list[NodeInfo] = []
        # Each container's ContainerInfo until its status or placement changes: a node's list
        # is rebuilt on every change to it, mostly from these.
        self._containers_seen: dict[str, ContainerInfo] = {}
        # Image name -> how many nodes have it (names as `affinity:image==` matches them), so
        # Swarm's implicit image affinity is decided without looking at every node.
        self._image_nodes: dict[str, int] = {}

    def infos(self) -> list[NodeInfo]:
        """Every live node in Swarm's order, with its containers (creates in flight included)
        and its images (IDs and tags, from its images record)."""
        cluster = self._cluster
        changed = cluster.take_changed_nodes()
        for cid in cluster.take_changed_ids():
            self._containers_seen.pop(cid, None)
        images = cluster.node_images.names
        images_changed = cluster.node_images.take_changed()
        order = cluster.node_order()
        if order is not self._order:
            self._rebuild(order, images)
            return self._list
        for node_id in changed:
            info = self._infos.get(node_id)
            rec = cluster.nodes.get(node_id)
            if info is None or rec is None:
                continue  # a node that left: the order changes with it
            if self._records[node_id] is not rec:
                _follow_record(info, rec)
                self._records[node_id] = rec
            info.containers = self._containers(node_id)
        for node_id in images_changed:
            info = self._infos.get(node_id)
            if info is not None:
                self._set_images(info, images.get(node_id, _NO_IMAGES))
        return self._list

    def nodes_with_image(self, name: str) -> int:
        """How many live nodes have image `name` (ID, repo:tag or bare repository)."""
        return self._image_nodes.get(name, 0)

    def _rebuild(self, order: list[str], images: Mapping[str, Set[str]]) -> None:
        """The nodes came or went: NodeInfos of nodes still there are kept, brought up to date."""
        cluster = self._cluster
        infos: dict[str, NodeInfo] = {}
        for node_id in order:
            rec = cluster.nodes[node_id]
            info = self._infos.pop(node_id, None)
            if info is None:
                info = self._new(rec)
            else:
                if self._records[node_id] is not rec:
                    _follow_record(info, rec)
                info.containers = self._containers(node_id)
            self._records[node_id] = rec
            infos[node_id] = info
            self._set_images(info, images.get(node_id, _NO_IMAGES))
        for gone in self._infos.values():  # their images no longer count
            self._count_images(gone.image_names(), -1)
            del self._records[gone.id]
        self._infos = infos
        self._list = list(infos.values())
        self._order = order

    def _set_images(self, info: NodeInfo, images: Set[str]) -> None:
        if info.images == images:
            return
        self._count_images(info.image_names(), -1)
        info.images = set(images)
        self._count_images(info.image_names(), +1)

    def _count_images(self, names: Set[str], delta: int) -> None:
        counts = self._image_nodes
        for name in names:
            left = counts.get(name, 0) + delta
            if left > 0:
                counts[name] = left
            else:
                counts.pop(name, None)

    def _new(self, rec: NodeRecord) -> NodeInfo:
        return NodeInfo(
            id=rec.id,
            name=rec.name,
            addr=rec.addr,
            labels=dict(rec.labels),
            healthy=True,  # a node key exists only while its agent keeps the lease
            ncpu=rec.ncpu,
            memory=rec.memory_bytes,
            kernel_version=rec.kernel_version,
            operating_system=rec.operating_system,
            os_type=rec.os_type or "linux",
            storage_driver=rec.storage_driver,
            images=set(),
            containers=self._containers(rec.id),
        )

    def _containers(self, node_id: str) -> list[ContainerInfo]:
        seen = self._containers_seen
        out = []
        for cid, st, placed in self._cluster.containers_on(node_id):
            info = seen.get(cid)
            if info is None:
                info = container_info(cid, st, placed)
                if st is not None or placed is not None and not cid.startswith("pending-"):
                    seen[cid] = info  # creates in flight are few and short-lived: not kept
            out.append(info)
        return out


def _follow_record(info: NodeInfo, rec: NodeRecord) -> None:
    """A node record rewritten (a re-registration): only fields that changed are
    assigned, since each assignment makes the scheduler re-score the node."""
    fields = {
        "name": rec.name,
        "addr": rec.addr,
        "labels": dict(rec.labels),
        "ncpu": rec.ncpu,
        "memory": rec.memory_bytes,
        "kernel_version": rec.kernel_version,
        "operating_system": rec.operating_system,
        "os_type": rec.os_type or "linux",
        "storage_driver": rec.storage_driver,
    }
    for name, value in fields.items():
        if getattr(info, name) != value:
            setattr(info, name, value)
