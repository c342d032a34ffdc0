"""How the manager finds a container from what a client calls it (docker's references): a full
ID, a Swarm ID (full or its 12 characters), a name, an ID prefix, `/name` or `node/name`, all
from the cluster's view (manager/container_index.py) without asking every node; and the Swarm
identity and dependency references of a create body. Mixed into Cluster."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, NotFound
from proto.logical import SWARM_ID_LABEL
from proto.records_pb2 import ContainerStatus, LogicalContainer, NodeRecord

if TYPE_CHECKING:
    from collections.abc import Mapping

    from manager.cluster import Placement
    from proto.agent_pb2_grpc import AgentStub

T = TypeVar("T")
ID_LEN = 64
SHORT_ID_LEN = 12


class ContainerRefs:
    """Needs the view's records and lookups (Cluster's, ContainerIndex's, LogicalView's)."""

    statuses: dict[str, ContainerStatus]
    placements: dict[str, Placement]
    pending: dict[int, Placement]
    nodes: dict[str, NodeRecord]
    node_names: dict[str, str]

    if TYPE_CHECKING:

        def ids_named(self, name: str) -> tuple[str, ...]: ...
        def ids_with_swarm_id(self, swarm_id: str) -> tuple[str, ...]: ...
        def ids_with_short_swarm_id(self, short: str) -> tuple[str, ...]: ...
        def shown(self, cid: str) -> bool: ...
        def is_known(self, cid: str) -> bool: ...
        def is_stale_copy(self, node_id: str, cid: str, labels: Mapping[str, str]) -> bool: ...
        def unplaced(self) -> dict[str, LogicalContainer]: ...
        def unplaced_ref(self, ref: str) -> tuple[str, str] | None: ...
        def container_node(self, cid: str) -> str | None: ...
        def node_by_name(self, name: str) -> NodeRecord | None: ...

        async def call(
            self, node_id: str, fn: Callable[[AgentStub], Awaitable[T]], timeout: float | None = ...
        ) -> T: ...

    def name_holder(self, name: str) -> str | None:
        """The container `name` names cluster-wide, as far as etcd and our own creates know: a
        status record's name wins over our own create's, which wins over a container being
        rescheduled (it keeps its name also when no copy stands for it)."""
        by_placement = None
        for cid in self.ids_named(name):
            if not self.shown(cid):
                continue
            st = self.statuses.get(cid)
            if st is not None and st.name == name:
                return cid
            by_placement = cid
        if by_placement is not None:
            return by_placement
        for rid, rec in self.unplaced().items():
            if rec.name == name:
                return rid
        return None

    def by_swarm_id(self, ref: str) -> str | None:
        """The container whose `com.docker.swarm.id` is `ref` or starts with a 12-character
        `ref` (Swarm's full or truncated form); None when none or several carry it."""
        if len(ref) == ID_LEN:
            candidates = self.ids_with_swarm_id(ref)
        elif len(ref) == SHORT_ID_LEN:
            candidates = self.ids_with_short_swarm_id(ref)
        else:
            return None
        # A stale copy is not counted: the swarm id names the live one.
        found = {cid for cid in candidates if self.shown(cid)}
        return found.pop() if len(found) == 1 else None

    def _engine_ref(self, ref: str) -> str:
        """`ref` itself, or the container ID when `ref` is only a Swarm ID (nodes know none)."""
        if ref in self.statuses or ref in self.placements:
            return ref
        return self.by_swarm_id(ref) or ref

    def dependencies_by_id(self, body: dict[str, Any]) -> dict[str, Any]:
        """The create body with Swarm IDs in `--link`, `--volumes-from` and `--net container:`
        replaced by the container IDs, so the node finds the containers they name."""
        host = body.get("HostConfig")
        if not isinstance(host, dict):
            return body
        new = dict(host)
        links = host.get("Links")
        if isinstance(links, list):
            new["Links"] = [
                self._engine_ref(ref) + sep + alias
                for ref, sep, alias in (str(v).partition(":") for v in links)
            ]
        volumes_from = host.get("VolumesFrom")
        if isinstance(volumes_from, list):
            new["VolumesFrom"] = [
                self._engine_ref(ref) + sep + mode
                for ref, sep, mode in (str(v).partition(":") for v in volumes_from)
            ]
        mode = str(host.get("NetworkMode") or "")
        if mode.startswith("container:"):
            new["NetworkMode"] = "container:" + self._engine_ref(mode.removeprefix("container:"))
        return {**body, "HostConfig": new} if new != host else body

    def with_swarm_id(self, body: dict[str, Any]) -> dict[str, Any]:
        """The create body with its `com.docker.swarm.id`: one the client set is kept (Swarm
        sets it only when empty, which rescheduling relies on), else a new random one."""
        labels = body.get("Labels")
        labels = dict(labels) if isinstance(labels, dict) else {}
        if labels.get(SWARM_ID_LABEL):
            return body
        in_flight = {p.labels.get(SWARM_ID_LABEL) for p in self.pending.values()}
        while True:
            sid = secrets.token_hex(ID_LEN // 2)
            if not self.is_known(sid) and self.by_swarm_id(sid) is None and sid not in in_flight:
                break
        labels[SWARM_ID_LABEL] = sid
        return {**body, "Labels": labels}

    async def resolve(self, ref: str) -> tuple[str, str]:
        """(node id, container id) for a full ID, Swarm ID (full or 12 characters), name,
        ID prefix, `/name` or `node/name`, on a node that is in the cluster."""
        node_id, cid = await self._resolve(ref)
        if node_id not in self.nodes:
            # Its status record outlives the node's registration (the node may come back);
            # classic Swarm's answer for a container on an engine it cannot reach (api/utils.go).
            name = self.node_names.get(node_id, node_id)
            raise DockerError(f"Container {ref} running on unhealthy node {name}", 500)
        return node_id, cid

    async def _resolve(self, ref: str) -> tuple[str, str]:
        text = ref[1:] if ref.startswith("/") else ref
        if "/" in text:
            node_name, _, name = text.partition("/")
            rec = self.node_by_name(node_name)
            if rec is None or not name:
                raise NotFound(f"No such container: {ref}")
            for cid in self.ids_named(name):
                st = self.statuses.get(cid)
                matches = st is not None and st.node_id == rec.id and st.name == name
                if matches and self.shown(cid):
                    return rec.id, cid
            return await self._ask(ref, name, rec.id)
        if (text in self.statuses or text in self.placements) and self.shown(text):
            node_id = self.container_node(text)
            assert node_id is not None
            return node_id, text
        swarm_held = self.by_swarm_id(text)
        if swarm_held is not None:
            node_id = self.container_node(swarm_held)
            if node_id is not None:
                return node_id, swarm_held
        cid = self.name_holder(text)
        if cid is not None:
            node_id = self.container_node(cid)
            if node_id is not None:
                return node_id, cid
        if text:
            ids = {c for c in (*self.statuses, *self.placements) if c.startswith(text)}
            ids = {c for c in ids if self.shown(c)}
            if len(ids) > 1:
                raise NotFound(f"Multiple IDs found with provided prefix: {ref}")
            if len(ids) == 1:
                cid = ids.pop()
                node_id = self.container_node(cid)
                assert node_id is not None
                return node_id, cid
        unplaced = self.unplaced_ref(text)
        if unplaced is not None:
            return unplaced
        # Not asked of every node: the view knows every container the manager created and,
        # from the status records, every other one (classic Swarm's cache answers the same).
        raise NotFound(f"No such container: {ref}")

    async def _ask(self, ref: str, text: str, node_id: str) -> tuple[str, str]:
        """`node/name` the view does not know yet (its status write in flight): that node's
        answer."""
        try:
            reply = await self.call(node_id, lambda s: s.ContainerInspect(pb.ContainerRef(id=text)))
        except DockerError as e:
            if "Multiple IDs" in e.message:
                raise NotFound(f"Multiple IDs found with provided prefix: {ref}") from None
            raise NotFound(f"No such container: {ref}") from None
        body = json.loads(reply.json)
        labels = (body.get("Config") or {}).get("Labels") or {}
        if self.is_stale_copy(node_id, str(body["Id"]), labels):
            raise NotFound(f"No such container: {ref}")
        return node_id, str(body["Id"])
