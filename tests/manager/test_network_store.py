"""manager/network_store.py on a real etcd: one transaction per create and remove, unique names,
VNIs and subnets under concurrent creates, removal refused while an endpoint exists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from ipaddress import IPv4Network
from typing import Any

import pytest

from manager.network_ipam import FIRST_VNI, user_ipam
from manager.network_store import NetworkStore
from proto.docker.errors import Conflict, DockerError, InvalidParameter, NotFound
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import EndpointRecord, NetworkRecord, NodeRecord

HOST_NETS = [IPv4Network("10.0.1.0/24"), IPv4Network("192.168.5.0/24")]


async def _host() -> list[IPv4Network]:
    return list(HOST_NETS)


@pytest.fixture
async def store(etcd: Any) -> AsyncIterator[tuple[KV, NetworkStore]]:  # noqa: ANN401
    kv = await KV.connect([etcd.endpoint])
    keys = Keys("/t")
    try:
        yield kv, NetworkStore(kv, keys, _host)
    finally:
        await kv.delete_prefix("/t/")
        await kv.close()


def _template(name: str) -> NetworkRecord:
    return NetworkRecord(name=name, driver="overlay", labels={"a": "b"})


async def test_create_writes_record_and_both_claims_at_one_revision(store: Any) -> None:
    kv, st = store
    keys = st.keys
    await kv.put(keys.member("n1"), NodeRecord(id="n1", addr="10.0.0.7:2377").SerializeToString())
    rec = await st.create(_template("one"), None)
    assert len(rec.id) == 64 and rec.vni == FIRST_VNI
    # 10.0.0.0/24 holds a node's address and 10.0.1.0/24 is this host's: both skipped.
    assert (rec.subnet, rec.gateway, rec.ip_range) == ("10.0.2.0/24", "10.0.2.1", "")
    assert not rec.ipam_user and rec.labels == {"a": "b"}
    entries = [
        await kv.get(k) for k in (keys.network(rec.id), keys.network_name("one"), keys.vni(4096))
    ]
    assert all(e is not None for e in entries)
    assert len({e.mod_revision for e in entries if e}) == 1
    assert entries[1] and entries[1].value == rec.id.encode()
    assert await st.all() == [rec] and await st.get(rec.id) == (rec, entries[0].mod_revision)
    with pytest.raises(Conflict, match="^network with name one already exists$"):
        await st.create(_template("one"), None)


async def test_user_subnet_is_checked_against_other_networks(store: Any) -> None:
    _, st = store
    rec = await st.create(_template("u"), user_ipam("10.9.0.0/16", "10.9.0.254", "10.9.1.0/24"))
    assert (rec.subnet, rec.gateway, rec.ip_range, rec.ipam_user) == (
        "10.9.0.0/16",
        "10.9.0.254",
        "10.9.1.0/24",
        True,
    )
    with pytest.raises(DockerError, match="Pool overlaps with other one") as info:
        await st.create(_template("v"), user_ipam("10.9.3.0/24", "", ""))
    assert info.value.status == 403
    assert user_ipam("10.8.0.0/24", "", "").gateway == "10.8.0.1"
    for args, message in [
        (("nonsense", "", ""), "Invalid Address Pool"),
        (("10.8.0.0/24", "10.7.0.1", ""), r"failed to allocate gateway \(10.7.0.1\)"),
        (("10.8.0.0/24", "x", ""), "invalid gateway address x in Ipam configuration"),
        (("10.8.0.0/24", "", "10.7.0.0/25"), "Invalid Address SubPool"),
    ]:
        with pytest.raises(InvalidParameter, match=message):
            user_ipam(*args)
    with pytest.raises(DockerError, match="IPv4 only"):
        user_ipam("fd00::/64", "", "")


async def test_concurrent_creates_never_share_vni_subnet_or_name(store: Any) -> None:
    kv, st = store
    # Several stores on their own connections, as several managers or request handlers.
    others = [await KV.connect(kv.endpoints) for _ in range(3)]
    stores = [st, *(NetworkStore(o, st.keys, _host) for o in others)]
    try:
        names = [f"n{i % 20}" for i in range(30)]  # 10 names asked for twice
        results = await asyncio.gather(
            *(stores[i % 4].create(_template(n), None) for i, n in enumerate(names)),
            return_exceptions=True,
        )
    finally:
        for o in others:
            await o.close()
    made = [r for r in results if isinstance(r, NetworkRecord)]
    lost = [r for r in results if not isinstance(r, NetworkRecord)]
    assert sorted(r.name for r in made) == sorted(set(names))
    assert len(lost) == 10 and all(isinstance(e, Conflict) for e in lost)
    stored = await st.all()
    assert sorted(r.id for r in stored) == sorted(r.id for r in made)
    assert len({r.vni for r in stored}) == 20
    subnets = [IPv4Network(r.subnet) for r in stored]
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])
    assert not any(s.overlaps(h) for s in subnets for h in HOST_NETS)
    assert len(await kv.get_prefix(st.keys.vnis_prefix())) == 20
    assert len(await kv.get_prefix(st.keys.network_names_prefix())) == 20


async def test_remove_refused_while_an_endpoint_exists(store: Any) -> None:
    kv, st = store
    keys = st.keys
    rec = await st.create(_template("busy"), None)
    ep = EndpointRecord(network_id=rec.id, ip="10.0.0.2", container_id="c" * 64)
    await kv.put(keys.endpoint(rec.id, "10.0.0.2"), ep.SerializeToString())
    with pytest.raises(DockerError) as info:
        await st.remove(rec.id)
    assert info.value.status == 403
    assert info.value.message == (
        f"error while removing network: network busy id {rec.id} has active endpoints"
    )
    assert await st.get(rec.id) is not None
    assert [e.container_id for e in await st.endpoints(rec.id)] == ["c" * 64]
    await kv.delete(keys.endpoint(rec.id, "10.0.0.2"))
    assert (await st.remove(rec.id)).id == rec.id
    for key in (keys.network(rec.id), keys.network_name("busy"), keys.vni(rec.vni)):
        assert await kv.get(key) is None
    with pytest.raises(NotFound, match=f"network {rec.id} not found"):
        await st.remove(rec.id)
    # The name and the VNI are free again.
    again = await st.create(_template("busy"), None)
    assert again.vni == rec.vni and again.id != rec.id
