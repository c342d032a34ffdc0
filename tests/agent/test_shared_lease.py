"""Nodes that live and die together under one lease (agent/shared_lease.py), against a real
etcd: each node's record is under the host's lease, a lost lease is replaced and every node
registers again under the new one, and a node leaving takes only its own key."""

from __future__ import annotations

import asyncio

import pytest

from agent import nodeid
from agent.registration import Registration, describe_host
from agent.shared_lease import SharedLease
from proto.keys import Keys
from proto.kv import KV

pytestmark = pytest.mark.timeout(60)

KEYS = Keys("/shared")


async def _until(check: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_nodes_register_under_the_shared_lease_and_follow_a_new_one(kv: KV) -> None:
    lease = SharedLease(kv, ttl_s=3, heartbeat_s=0.5)
    await lease.start()
    nodes = [
        Registration(
            kv,
            KEYS,
            describe_host(nodeid.generate(), f"hollow-{i}", f"127.0.0.1:{4000 + i}", {}, 1),
            ttl_s=3,
            heartbeat_s=0.5,
            shared=lease,
        )
        for i in range(3)
    ]
    try:
        for node in nodes:
            await node.start()
        await asyncio.wait_for(asyncio.gather(*(n.registered.wait() for n in nodes)), 10)
        first = lease.lease_id
        assert first and {n.lease_id for n in nodes} == {first}
        for node in nodes:
            entry = await kv.get(node.key)
            assert entry is not None and entry.lease == first

        # The lease is lost (revoked behind the host's back, as if it had expired): a new one
        # is granted and every node's record is written again under it.
        await kv.lease_revoke(first)

        async def moved() -> bool:
            if lease.lease_id in (0, first):
                return False
            entries = [await kv.get(n.key) for n in nodes]
            return all(e is not None and e.lease == lease.lease_id for e in entries)

        await _until(moved)

        # One node leaving deletes its own key; the lease (the others') stays.
        await nodes[0].stop(deregister=True)
        assert await kv.get(nodes[0].key) is None
        assert None not in [await kv.get(n.key) for n in nodes[1:]]
    finally:
        for node in nodes:
            await node.stop(deregister=False)
        await lease.stop(revoke=True)
    # Revoking the shared lease takes every record still under it.
    assert [await kv.get(n.key) for n in nodes] == [None, None, None]
