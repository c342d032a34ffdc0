"""A create's records in etcd, written so that a manager crash at any moment leaves nothing
half-made (docs/failover.md, "Manager side"). Three transactions:

  intent   before the node is asked: the name claim `names/<name>` = "" and the logical record
           `placing` on the chosen node, generation 1, no container ID yet;
  commit   once the node made it: the record `placed` with the container ID, `names/<name>` =
           that ID and the desired record `containers/<id>` — only while the claim and the
           record are still the intent's (both were written at the intent's revision);
  abandon  the node refused it: the intent and its claim go.

An intent left behind (the manager crashed, or etcd failed the commit) is resolved by the
rescheduler with `resolve`, which never creates the container on the user's behalf: one the
node made under the intent (same swarm id and generation) is adopted, else the intent and its
claim are dropped; a node that cannot be asked is asked again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from manager.cluster import CALL_TIMEOUT_S, Cluster
from manager.cluster_records import conflict_message, created_puts
from manager.logical import CAS_ATTEMPTS, body_of, holds_identity, is_reschedulable
from manager.reschedule_agent import create_call, find
from proto import agent_pb2 as pb
from proto.docker.errors import Conflict, DockerError
from proto.kv import Condition, Entry, KVError, ModRevisionIs, Put
from proto.logical import FIRST_GENERATION, PLACED, PLACING, SWARM_ID_LABEL
from proto.records_pb2 import LogicalContainer

log = logging.getLogger(__name__)

# Test hooks: seconds to pause right after the intent is written, and right after the node's
# create returned (the windows in which a manager crash must leave nothing half-made). Unset in
# production.
PAUSE_AFTER_INTENT_ENV = "FLOTILLA_TEST_PAUSE_AFTER_INTENT_S"
PAUSE_AFTER_NODE_CREATE_ENV = "FLOTILLA_TEST_PAUSE_AFTER_NODE_CREATE_S"
# An intent whose node has no container of it is dropped only once a create made under it can
# no longer be running: the manager's call to the node has this deadline.
SETTLE_NS = int(CALL_TIMEOUT_S * 1e9)
# The node's create failed this way: it may have been made all the same (no answer in time, the
# connection dropped). The intent stays for `resolve`, which asks the node.
UNKNOWN_OUTCOME = (503, 504)


@dataclass(frozen=True)
class Intent:
    name: str
    node_id: str
    body: dict[str, Any]
    record: LogicalContainer | None  # None: the swarm id names another live container
    revision: int  # of the intent's transaction: the claim's and the record's mod revision


async def create_on_node(
    cluster: Cluster, node_id: str, token: int, name: str, body: dict[str, Any]
) -> tuple[str, list[str]]:
    """`docker create` of `body` on the chosen node, between its intent and its commit. `token`:
    its in-flight placement, counted by the scheduler until the container exists."""
    swarm_id = str((body.get("Labels") or {}).get(SWARM_ID_LABEL) or "")
    cluster.creating.add(swarm_id)
    try:
        try:
            intent = await write_intent(cluster, name, node_id, body)
            await _pause_for_test(PAUSE_AFTER_INTENT_ENV)
            request = pb.ContainerCreateRequest(json=json.dumps(body).encode(), name=name)
            try:
                reply = await cluster.call(node_id, lambda s: create_call(s, request))
            except DockerError as e:
                if e.status in UNKNOWN_OUTCOME:
                    cluster.intent_left()
                else:
                    await _abandon_quietly(cluster, intent)
                raise
            except BaseException:
                cluster.intent_left()  # cancelled (the manager stops): the next one resolves it
                raise
        finally:
            placement = cluster.pending.pop(token, None)
        assert placement is not None
        cluster.created(placement, reply.id)
        await _pause_for_test(PAUSE_AFTER_NODE_CREATE_ENV)
        await _commit_or_undo(cluster, intent, reply.id)
        return reply.id, list(reply.warnings)
    finally:
        cluster.creating.discard(swarm_id)


async def _commit_or_undo(cluster: Cluster, intent: Intent, cid: str) -> None:
    try:
        if await adopt(cluster, intent, cid):
            return
    except KVError as e:
        # It may or may not have been written: the intent (if still there) is adopted later.
        log.warning("cannot record container %s in etcd (%s): resolved later", cid[:12], e)
        cluster.intent_left()
        return
    except DockerError as e:
        log.warning("cannot undo the create of %s: %s (resolved later)", cid[:12], e)
        cluster.intent_left()
        raise
    cluster.forget(cid)
    if not intent.name:
        raise DockerError(f"the records of container {cid} changed during its create", 500)
    holder = ""
    with contextlib.suppress(KVError):
        entry = await cluster.kv.get(cluster.keys.name(intent.name))
        holder = entry.value.decode() if entry is not None else ""
    raise Conflict(conflict_message(intent.name, holder or "(being created)"))


async def write_intent(cluster: Cluster, name: str, node_id: str, body: dict[str, Any]) -> Intent:
    """Claim `name` and write the `placing` record, in one transaction. Conflict (dockerd's
    words) when a live container holds the name or a concurrent create took it first; a claim
    left by a crashed manager or a container removed behind our back is taken over."""
    swarm_id = str((body.get("Labels") or {}).get(SWARM_ID_LABEL) or "")
    try:
        for attempt in range(CAS_ATTEMPTS):
            # First as if neither key existed (the usual case: a new name, a new swarm id):
            # one transaction, no reads. A compare that fails says to read them and retry.
            optimistic = attempt == 0
            compares: list[Condition] = []
            puts: list[Put] = []
            claim: Entry | None = None
            if name:
                claim = None if optimistic else await _claimable(cluster, name)
                key = cluster.keys.name(name)
                compares.append(ModRevisionIs(key, claim.mod_revision if claim else 0))
                puts.append(Put(key, b""))
            record = None
            if swarm_id:
                found = None if optimistic else await cluster.logical.get(swarm_id)
                if found is not None and holds_identity(found[0], cluster.is_known):
                    log.warning(
                        "swarm id %s is taken: this create gets no logical record", swarm_id
                    )
                else:
                    record = _intent_record(swarm_id, name, node_id, body)
                    key = cluster.keys.logical(swarm_id)
                    compares.append(ModRevisionIs(key, found[1] if found is not None else 0))
                    puts.append(Put(key, record.SerializeToString()))
            revision = await cluster.kv.txn(compares, puts) if puts else 0
            if revision or not puts:
                return Intent(name, node_id, body, record, revision)
            if record is not None:
                # A retried transaction whose first attempt was applied fails its compares.
                entry = await cluster.kv.get(cluster.keys.logical(swarm_id))
                if entry is not None and entry.value == record.SerializeToString():
                    return Intent(name, node_id, body, record, entry.mod_revision)
            if name and not optimistic:
                now = await cluster.kv.get(cluster.keys.name(name))
                if now is not None and _revision(now) != _revision(claim):
                    # Another create took the name first, as dockerd lets the first one win.
                    raise Conflict(conflict_message(name, now.value.decode() or "(being created)"))
    except KVError as e:
        raise DockerError(f"cannot record the create of {name or swarm_id}: {e}", 500) from None
    raise DockerError(f"cannot record the create of {name or swarm_id}: contention", 500)


def _revision(entry: Entry | None) -> int:
    return entry.mod_revision if entry is not None else 0


async def _claimable(cluster: Cluster, name: str) -> Entry | None:
    """The claim on `name` now (None: free); Conflict when a live container holds it."""
    entry = await cluster.kv.get(cluster.keys.name(name))
    holder = entry.value.decode() if entry is not None else ""
    if holder and cluster.is_known(holder):
        raise Conflict(conflict_message(name, holder))
    return entry


def _intent_record(
    swarm_id: str, name: str, node_id: str, body: dict[str, Any]
) -> LogicalContainer:
    return LogicalContainer(
        swarm_id=swarm_id,
        generation=FIRST_GENERATION,  # the create path labels its body with it
        state=PLACING,
        node_id=node_id,
        container_id="",
        name=name,
        create_json=json.dumps(body).encode(),
        reschedule=is_reschedulable(body.get("Labels") or {}),
        start=False,  # `docker start` sets it: a create alone is not meant to run
        updated_at_ns=time.time_ns(),
    )


async def commit(cluster: Cluster, intent: Intent, cid: str) -> bool:
    """Record container `cid`, made on the node under `intent`, in one transaction. False when
    the claim or the record is no longer the intent's (then nothing is written)."""
    compares: list[Condition] = []
    puts = created_puts(cluster.keys, cid, intent.name, intent.node_id, intent.body)
    if intent.name:
        compares.append(ModRevisionIs(cluster.keys.name(intent.name), intent.revision))
    if intent.record is not None:
        placed = LogicalContainer()
        placed.CopyFrom(intent.record)
        placed.state = PLACED
        placed.container_id = cid
        placed.updated_at_ns = time.time_ns()
        key = cluster.keys.logical(placed.swarm_id)
        compares.append(ModRevisionIs(key, intent.revision))
        puts.append(Put(key, placed.SerializeToString()))
    if await cluster.kv.txn(compares, puts):
        return True
    # A retried transaction whose first attempt was applied fails its compares.
    if intent.record is not None:
        found = await cluster.logical.get(intent.record.swarm_id)
        return found is not None and found[0].container_id == cid
    entry = await cluster.kv.get(cluster.keys.name(intent.name)) if intent.name else None
    return entry is not None and entry.value == cid.encode()


async def adopt(cluster: Cluster, intent: Intent, cid: str) -> bool:
    """Commit `cid`, or, when the intent's claim was taken over meanwhile, remove the container
    (never reported to anyone, it cannot keep a name another container holds) and drop the
    intent. True: committed. DockerError when the node cannot remove it (the intent stays)."""
    if await commit(cluster, intent, cid):
        return True
    if intent.record is not None:
        found = await cluster.logical.get(intent.record.swarm_id)
        if found is None or found[1] != intent.revision:
            return False  # resolved elsewhere
    log.warning("create of %s on %s lost its name: removing %s", intent.name, intent.node_id, cid)
    await cluster.call(
        intent.node_id,
        lambda s: s.ContainerRemove(pb.ContainerRemoveRequest(id=cid, force=True)),
    )
    await abandon(cluster, intent)
    return False


async def abandon(cluster: Cluster, intent: Intent) -> bool:
    """Drop the intent and its claim in one transaction (the claim stays when another create
    took it over meanwhile). False when the record is no longer the intent's."""
    keys = []
    if intent.name:
        keys.append(cluster.keys.name(intent.name))
    if intent.record is not None:
        keys.append(cluster.keys.logical(intent.record.swarm_id))
    if not keys:
        return True
    if await cluster.kv.txn([ModRevisionIs(k, intent.revision) for k in keys], deletes=keys):
        return True
    if intent.record is None or not intent.name:
        return False
    record_key = keys[-1]
    return bool(
        await cluster.kv.txn([ModRevisionIs(record_key, intent.revision)], [], [record_key])
    )


async def _abandon_quietly(cluster: Cluster, intent: Intent) -> None:
    try:
        await abandon(cluster, intent)
    except KVError as e:
        log.warning("cannot drop the create intent of %s: %s (resolved later)", intent.name, e)
        cluster.intent_left()


async def resolve(
    cluster: Cluster, rec: LogicalContainer, revision: int, settle_ns: int = SETTLE_NS
) -> None:
    """An intent no create of this manager is finishing: adopt the container its node made
    under it, or drop it with its claim once no create under it can still be running. Nothing
    is decided while the node cannot be asked."""
    if rec.swarm_id in cluster.creating or rec.node_id not in cluster.nodes:
        return
    intent = Intent(rec.name, rec.node_id, body_of(rec), rec, revision)
    try:
        cid = await find(cluster, rec)
    except DockerError as e:
        log.info("create intent of %s: node %s not answering (%s)", rec.name, rec.node_id, e)
        return
    if cid is None:
        if time.time_ns() - rec.updated_at_ns >= settle_ns and await abandon(cluster, intent):
            log.info("create of %s never reached node %s: intent dropped", rec.name, rec.node_id)
        return
    try:
        if await adopt(cluster, intent, cid):
            log.info("create of %s on %s adopted as %s", rec.name, rec.node_id, cid[:12])
    except DockerError as e:
        log.info("create intent of %s: cannot remove %s yet (%s)", rec.name, cid[:12], e)


async def _pause_for_test(env: str) -> None:
    seconds = float(os.environ.get(env) or 0)
    if seconds > 0:
        await asyncio.sleep(seconds)
