"""The manager's own etcd records of containers: cluster-wide name claims (`names/`), desired
records (`containers/`) and, through LogicalStore, the logical ones (`logical/`)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

from manager.logical import LogicalStore
from proto.keys import Keys
from proto.kv import KV, KVError, Put
from proto.records_pb2 import ContainerDesired

log = logging.getLogger(__name__)


def conflict_message(name: str, cid: str) -> str:
    """dockerd's wording for a name already taken."""
    return (
        f'Conflict. The container name "/{name}" is already in use by container "{cid}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )


def desired_record(cid: str, name: str, node_id: str, body: dict[str, Any]) -> ContainerDesired:
    """`containers/<cid>`: what the manager created where."""
    return ContainerDesired(
        id=cid,
        name=name,
        node_id=node_id,
        spec_json=json.dumps(body).encode(),
        desired_state="created",
        created_at_ns=time.time_ns(),
    )


def created_puts(keys: Keys, cid: str, name: str, node_id: str, body: dict[str, Any]) -> list[Put]:
    """What records container `cid` as created: its name claim (when named) and its desired
    record. Written alone, or in a transaction with the logical record that names it."""
    desired = desired_record(cid, name, node_id, body).SerializeToString()
    puts = [Put(keys.container(cid), desired)]
    if name:
        puts.append(Put(keys.name(name), cid.encode()))
    return puts


class ClusterRecords:
    """Mixed into Cluster, which provides the etcd client and the key layout. A create's own
    records are written by manager/create_intent.py."""

    kv: KV
    keys: Keys
    logical: LogicalStore

    async def release_name(self, name: str, holder: str | None = None) -> None:
        """Drop the claim on `name` (only if `holder` still holds it, when given)."""
        if not name:
            return
        with contextlib.suppress(KVError, ValueError):
            key = self.keys.name(name)
            if holder is None:
                await self.kv.delete(key)
                return
            entry = await self.kv.get(key)
            if entry is not None and entry.value.decode() == holder:
                await self.kv.compare_and_delete(key, entry.mod_revision)

    async def record_created(self, cid: str, name: str, node_id: str, body: dict[str, Any]) -> None:
        try:
            await self.kv.txn([], created_puts(self.keys, cid, name, node_id, body))
        except KVError as e:
            log.warning("cannot record container %s in etcd: %s", cid, e)

    async def record_removed(self, cid: str, name: str, swarm_id: str = "") -> None:
        with contextlib.suppress(KVError):
            await self.kv.delete(self.keys.container(cid))
        await self.release_name(name, cid)
        if swarm_id:
            await self.logical.forget(swarm_id, cid)

    async def record_renamed(self, cid: str, old: str, new: str) -> None:
        try:
            await self.kv.put(self.keys.name(new), cid.encode())
        except KVError as e:
            log.warning("cannot record the new name of %s: %s", cid, e)
        await self.release_name(old, cid)
        entry = None
        with contextlib.suppress(KVError):
            entry = await self.kv.get(self.keys.container(cid))
        if entry is not None:
            desired = ContainerDesired()
            desired.ParseFromString(entry.value)
            desired.name = new
            with contextlib.suppress(KVError):
                await self.kv.put(self.keys.container(cid), desired.SerializeToString())
