"""The agent's overlay bookkeeping against a real etcd: address claims (unique under concurrent
starts on several nodes, --ip, the previous address, a dead node's addresses freed with its
lease, re-asserted after a registration) and the peer programming fed by the endpoint watch.
The data plane is the only fake here (a recorder of what would be programmed): the kernel side
has its own tests (tests/runtime/test_overlay.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from agent.overlay_directory import EtcdDirectory
from agent.overlay_peers import PeerSync
from agent.overlay_view import OverlayView
from deploy.etcd import EtcdServer
from proto.docker.errors import DockerError
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import EndpointRecord, NetworkRecord
from runtime.net_directory import ADDRESS_IN_USE, EndpointRequest
from runtime.network import mac_for_ip
from runtime.overlay import OverlaySpec

pytestmark = pytest.mark.timeout(60)

NET = NetworkRecord(
    id="a" * 64, name="web", driver="overlay", vni=4097, subnet="10.7.0.0/24", gateway="10.7.0.1"
)
# container id -> its labels, as the runtime's records say (swarm id, reschedule policy)
LABELS: dict[str, dict[str, str]] = {}
RESCHEDULE = {"com.docker.swarm.reschedule-policies": '["on-node-failure"]'}
SMALL = NetworkRecord(
    id="b" * 64, name="tiny", driver="overlay", vni=4098, subnet="10.8.0.0/29", gateway="10.8.0.1"
)


@dataclass
class RecordingPlane:
    """What PeerSync would program: the peers last set per network."""

    programmed: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def set_peers(self, spec: OverlaySpec, peers: dict[str, tuple[str, str]]) -> None:
        self.programmed[spec.id] = dict(peers)
        self.changed.set()


@dataclass
class Node:
    node_id: str
    vtep: str
    kv: KV
    lease: int
    view: OverlayView
    peers: PeerSync
    directory: EtcdDirectory
    plane: RecordingPlane
    in_use: set[str]


@pytest.fixture
async def cluster(etcd: EtcdServer) -> AsyncIterator[tuple[KV, Keys, list[Node]]]:
    keys = Keys("/t")
    admin = await KV.connect([etcd.endpoint])
    for net in (NET, SMALL):
        await admin.put(keys.network(net.id), net.SerializeToString())
    nodes: list[Node] = []
    try:
        for i in range(3):
            kv = await KV.connect([etcd.endpoint])
            lease = await kv.lease_grant(30)
            plane = RecordingPlane()
            view = OverlayView(kv, keys)
            in_use: set[str] = set()
            peers = PeerSync(view, plane, f"N{i}", lambda u=in_use: set(u))  # type: ignore[arg-type]
            view.on_change = peers.changed
            directory = EtcdDirectory(
                kv,
                keys,
                view,
                peers,
                f"N{i}",
                f"192.0.2.{i + 1}",
                lambda n=i: nodes[n].lease,
                labels_of=lambda cid: LABELS.get(cid, {}),
            )
            nodes.append(
                Node(f"N{i}", f"192.0.2.{i + 1}", kv, lease, view, peers, directory, plane, in_use)
            )
            await view.start()
            await peers.start()
            await view.ready.wait()
        yield admin, keys, nodes
    finally:
        for node in nodes:
            await node.peers.stop()
            await node.view.stop()
            await node.kv.close()
        await admin.close()


def spec(net: NetworkRecord) -> OverlaySpec:
    return OverlaySpec(net.id, net.name, net.vni, net.subnet, net.gateway)


def request(cid: str, wanted: str = "", previous: str = "") -> EndpointRequest:
    return EndpointRequest(cid, f"c-{cid}", (cid[:12],), wanted, previous)


async def test_concurrent_claims_on_three_nodes_never_share_an_address(cluster) -> None:
    admin, keys, nodes = cluster
    claims = [nodes[i % 3].directory.claim(spec(NET), request(f"{i:064x}")) for i in range(60)]
    ips = await asyncio.gather(*claims)
    assert len(set(ips)) == 60
    assert "10.7.0.1" not in ips and "10.7.0.0" not in ips and "10.7.0.255" not in ips
    entries = await admin.get_prefix(keys.endpoints_prefix(NET.id))
    owners = {}
    for entry in entries:
        rec = EndpointRecord()
        rec.ParseFromString(entry.value)
        owners[rec.ip] = rec.container_id
    assert sorted(owners) == sorted(ips)
    assert len(set(owners.values())) == 60


async def test_wanted_taken_previous_and_exhausted(cluster) -> None:
    _, _, nodes = cluster
    d = nodes[0].directory
    assert await d.claim(spec(NET), request("1" * 64, wanted="10.7.0.50")) == "10.7.0.50"
    with pytest.raises(DockerError) as err:
        await nodes[1].directory.claim(spec(NET), request("2" * 64, wanted="10.7.0.50"))
    assert (err.value.status, err.value.message) == (403, ADDRESS_IN_USE)
    # The address it had before, when free; else the first free one.
    assert await d.claim(spec(NET), request("3" * 64, previous="10.7.0.77")) == "10.7.0.77"
    assert await d.claim(spec(NET), request("4" * 64, previous="10.7.0.50")) == "10.7.0.2"
    # A /29 has 6 hosts, one is the gateway: 5 addresses, then dockerd's error.
    got = [await d.claim(spec(SMALL), request(f"{i:064x}")) for i in range(5)]
    assert got == [f"10.8.0.{i}" for i in range(2, 7)]
    with pytest.raises(DockerError) as err:
        await d.claim(spec(SMALL), request("9" * 64))
    assert err.value.message == (
        f"no available IPv4 addresses on this network's address pools: tiny ({SMALL.id})"
    )
    await d.release(spec(SMALL), "10.8.0.4")
    assert await d.claim(spec(SMALL), request("9" * 64)) == "10.8.0.4"


async def test_a_dead_nodes_addresses_go_with_its_lease(cluster) -> None:
    admin, keys, nodes = cluster
    LABELS["5" * 64] = RESCHEDULE  # fenced before its lease can expire: nothing to keep
    ip = await nodes[1].directory.claim(spec(NET), request("5" * 64))
    await nodes[1].kv.lease_revoke(nodes[1].lease)
    assert await admin.get(keys.endpoint(NET.id, ip)) is None
    assert await admin.get(keys.reservation(NET.id, ip)) is None
    # Its rescheduled copy on another node gets the same address back.
    assert await nodes[2].directory.claim(spec(NET), request("6" * 64, previous=ip)) == ip


async def test_a_cut_off_nodes_running_container_keeps_its_address(cluster) -> None:
    """Not reschedulable: nothing fences it, so it may still run on a node that is only cut
    off, and its address is not handed out while the node is away."""
    admin, keys, nodes = cluster
    ip = await nodes[1].directory.claim(spec(SMALL), request("7" * 64))
    await nodes[1].kv.lease_revoke(nodes[1].lease)  # its claim went with the lease
    assert await admin.get(keys.endpoint(SMALL.id, ip)) is None
    got = [await nodes[2].directory.claim(spec(SMALL), request(f"{i:064x}")) for i in range(4)]
    assert ip not in got  # the other 4 of the /29's 5 addresses
    with pytest.raises(DockerError) as err:
        await nodes[2].directory.claim(spec(SMALL), request("8" * 64, wanted=ip))
    assert err.value.message == ADDRESS_IN_USE
    # Its node comes back with the container still running: the claim is asserted again.
    nodes[1].lease = await nodes[1].kv.lease_grant(30)
    await nodes[1].directory.reassert(lambda: [(spec(SMALL), request("7" * 64), ip)])
    entry = await admin.get(keys.endpoint(SMALL.id, ip))
    assert entry is not None and entry.lease == nodes[1].lease
    # It stops: both keys go, and the address is free again.
    await nodes[1].directory.release(spec(SMALL), ip)
    assert await admin.get(keys.reservation(SMALL.id, ip)) is None
    assert await nodes[2].directory.claim(spec(SMALL), request("9" * 64)) == ip


async def test_a_node_back_without_its_container_frees_the_address(cluster) -> None:
    admin, keys, nodes = cluster
    ip = await nodes[1].directory.claim(spec(NET), request("a" * 64))
    await nodes[1].kv.lease_revoke(nodes[1].lease)
    nodes[1].lease = await nodes[1].kv.lease_grant(30)
    await nodes[1].directory.reassert(list)  # it did not survive (a crashed host)
    assert await admin.get(keys.reservation(NET.id, ip)) is None
    assert await nodes[0].directory.claim(spec(NET), request("b" * 64, wanted=ip)) == ip


async def test_a_rescheduled_copy_gets_its_address_back_by_its_swarm_id(cluster) -> None:
    admin, keys, nodes = cluster
    old, new = "1" * 64, "2" * 64
    swarm = {"com.docker.swarm.id": "s" * 64, **RESCHEDULE}
    LABELS.update({old: swarm, new: {**swarm, "com.docker.swarm.generation": "2"}})
    ip = await nodes[1].directory.claim(spec(NET), request(old, previous="10.7.0.20"))
    assert ip == "10.7.0.20"
    await nodes[1].kv.lease_revoke(nodes[1].lease)  # its node died: its claim went
    # The replacement, a new container with the same swarm id on another node, asks for
    # nothing in particular and gets the address its logical container had (not 10.7.0.2).
    assert await nodes[2].directory.claim(spec(NET), request(new)) == ip
    last = await admin.get(keys.last_address("s" * 64, NET.id))
    assert last is not None and last.value.decode() == ip and last.lease == 0


async def test_reassert_moves_claims_to_the_new_lease_and_drops_stale_ones(cluster) -> None:
    admin, keys, nodes = cluster
    node = nodes[0]
    kept = await node.directory.claim(spec(NET), request("7" * 64))
    stale = await node.directory.claim(spec(NET), request("8" * 64))
    node.lease = await node.kv.lease_grant(30)  # as after a new registration
    lost = "10.7.0.200"  # held here while the node was away, its key gone with the old lease
    await node.directory.reassert(
        lambda: [(spec(NET), request("7" * 64), kept), (spec(NET), request("a" * 64), lost)]
    )
    kept_entry = await admin.get(keys.endpoint(NET.id, kept))
    assert kept_entry is not None and kept_entry.lease == node.lease
    assert await admin.get(keys.endpoint(NET.id, stale)) is None
    lost_entry = await admin.get(keys.endpoint(NET.id, lost))
    assert lost_entry is not None and lost_entry.lease == node.lease


async def test_peers_are_the_remote_endpoints_of_networks_in_use(cluster) -> None:
    _, _, nodes = cluster
    local, remote = nodes[0], nodes[1]
    mine = await local.directory.claim(spec(NET), request("b" * 64))
    local.in_use.add(NET.id)
    theirs = await remote.directory.claim(spec(NET), request("c" * 64))

    async def programmed(want: dict[str, tuple[str, str]]) -> None:
        while local.plane.programmed.get(NET.id) != want:
            local.plane.changed.clear()
            await local.plane.changed.wait()

    await asyncio.wait_for(programmed({theirs: (mac_for_ip(theirs), "192.0.2.2")}), 30)
    assert mine not in local.plane.programmed[NET.id]
    # Not in use on node 2: nothing is programmed there.
    assert NET.id not in nodes[2].plane.programmed
    await remote.directory.release(spec(NET), theirs)
    await asyncio.wait_for(programmed({}), 30)


async def test_names_answer_from_the_networks_a_container_joined(cluster) -> None:
    _, _, nodes = cluster
    here, there = nodes[0].directory, nodes[1].directory
    web = await there.claim(spec(NET), request("d" * 64))
    other = await there.claim(spec(SMALL), request("e" * 64))
    me = "f" * 64
    await here.claim(spec(NET), request(me))
    # Not joined yet: no network to answer from.
    assert here.resolve(me, "c-" + "d" * 64) == []
    await here.joined(me, "/nonexistent", [spec(NET)])

    async def resolved() -> list[str]:
        while not (found := here.resolve(me, "c-" + "d" * 64)):
            await asyncio.sleep(0.05)  # the claim on node 1 reaches node 0's view by its watch
        return found

    assert await asyncio.wait_for(resolved(), 30) == [web]
    assert here.resolve(me, ("d" * 64)[:12]) == [web]  # the short ID, an alias here
    assert here.reverse(me, web) == ["c-" + "d" * 64]
    # Another network's container is not visible from this one.
    assert here.resolve(me, "c-" + "e" * 64) == [] and other
    await here.left(me, [spec(NET)])
    assert here.resolve(me, "c-" + "d" * 64) == []


async def test_no_address_on_a_removed_network(cluster) -> None:
    admin, keys, nodes = cluster
    gone = NetworkRecord(
        id="c" * 64,
        name="gone",
        driver="overlay",
        vni=4099,
        subnet="10.9.0.0/24",
        gateway="10.9.0.1",
    )
    with pytest.raises(DockerError) as err:
        await nodes[0].directory.claim(spec(gone), request("5" * 64))
    assert (err.value.status, err.value.message) == (404, "network gone not found")
    assert await admin.get_prefix(keys.endpoints_prefix(gone.id)) == []


async def test_a_node_local_network_is_only_on_its_node_and_has_no_peers(cluster) -> None:
    admin, keys, nodes = cluster
    on_n1 = NetworkRecord(
        id="d" * 64, name="loc", driver="bridge", vni=4100, subnet="10.10.0.0/24",
        gateway="10.10.0.1", node_id="N1",
    )  # fmt: skip
    on_n2 = NetworkRecord(
        id="e" * 64, name="loc", driver="bridge", vni=4101, subnet="10.11.0.0/24",
        gateway="10.11.0.1", node_id="N2",
    )  # fmt: skip
    for net in (on_n1, on_n2):
        await admin.put(keys.network(net.id), net.SerializeToString())

    async def seen(node: Node) -> None:
        while len(node.view.networks) < 4:
            await asyncio.sleep(0.05)

    for node in nodes:
        await asyncio.wait_for(seen(node), 30)
    # By name, ID or prefix: each node its own `loc`; node 0 has none (dockerd's "missing").
    for ref in ("loc", on_n1.id, on_n1.id[:8], on_n2.id):
        assert await nodes[0].directory.lookup(ref) is None, ref
    found = await nodes[1].directory.lookup("loc")
    assert found is not None and found.spec.id == on_n1.id and found.spec.local
    assert await nodes[1].directory.lookup(on_n2.id) is None
    found = await nodes[2].directory.lookup("loc")
    assert found is not None and found.spec.id == on_n2.id
    overlay = await nodes[1].directory.lookup("web")
    assert overlay is not None and not overlay.spec.local
    # Before the view is read the directory asks etcd, with the same answers.
    nodes[0].view.ready.clear()
    try:
        assert await nodes[0].directory.lookup("loc") is None
        assert await nodes[0].directory.lookup("web") is not None
    finally:
        nodes[0].view.ready.set()
    # Two containers on node 1's network: addresses claimed, no peers programmed for it.
    n1 = nodes[1]
    local_spec = await n1.directory.lookup("loc")
    assert local_spec is not None
    await n1.directory.claim(local_spec.spec, request("7" * 64))
    await n1.directory.claim(local_spec.spec, request("8" * 64))
    n1.in_use.add(on_n1.id)
    n1.peers.resync()
    await n1.peers.program({on_n1.id})
    assert on_n1.id not in n1.plane.programmed


async def test_reassert_during_a_start_keeps_its_claim(cluster) -> None:
    # A registration's reassert runs beside starts: a claim already in etcd whose container's
    # record does not show the address yet (its claim() has not returned) must not be taken
    # for a stale one, or its address would be handed out twice.
    admin, keys, nodes = cluster
    directory = nodes[0].directory
    claimed, go_on = asyncio.Event(), asyncio.Event()
    create = directory._create

    async def paused_create(*args: object) -> bool:
        made = await create(*args)  # type: ignore[arg-type]
        if made:
            claimed.set()
            await go_on.wait()
        return made

    directory._create = paused_create  # type: ignore[method-assign]
    start = asyncio.create_task(directory.claim(spec(NET), request("c" * 64)))
    await claimed.wait()
    await directory.reassert(list)  # no record shows an address yet
    go_on.set()
    ip = await start
    entry = await admin.get(keys.endpoint(NET.id, ip))
    assert entry is not None, "the claim of a start in progress was deleted"
    rec = EndpointRecord()
    rec.ParseFromString(entry.value)
    assert rec.container_id == "c" * 64
    # Another start cannot get the same address.
    assert await nodes[1].directory.claim(spec(NET), request("d" * 64)) != ip
