"""The embedded DNS resolver, on the real kernel: served into fresh network namespaces and
asked from inside them, with a fake upstream server (dnspython) on the session's own loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest
from pyroute2 import IPRoute

from agent.dns_upstream import host_nameservers
from agent.embedded_dns import EmbeddedDNS
from runtime.netns import create_netns, delete_netns, run_in_netns

RESOLVER = "127.0.0.11"
UPSTREAM = "127.0.0.2"  # the fake upstream, on the test session's own loopback
DEAD_UPSTREAM = "127.0.0.3"  # nothing listens there
BIG = [f"192.0.2.{i}" for i in range(1, 101)]  # more than fits in 512 bytes

TABLE = {
    "c1": {"web": ["10.0.0.2", "10.0.0.3"], "db": ["10.0.0.4"], "store": ["10.0.0.4"]},
    "c2": {"web": ["10.1.0.9"]},
}
REVERSE = {"c1": {"10.0.0.4": ["db.backend"]}}


def lookup(container_id: str, name: str) -> list[str]:
    if name == "boom":
        raise RuntimeError("a broken name table")
    return TABLE.get(container_id, {}).get(name, [])


def reverse(container_id: str, address: str) -> list[str]:
    return REVERSE.get(container_id, {}).get(address, [])


# ---- fixtures ---------------------------------------------------------------------------------


def _lo_up() -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


@pytest.fixture
def make_netns(tmp_path: os.PathLike[str]) -> Iterator[Callable[[str], str]]:
    """Fresh network namespaces (lo up), removed even when the test fails."""
    made: list[str] = []

    def make(name: str) -> str:
        path = os.path.join(tmp_path, name)
        create_netns(path)
        made.append(path)
        run_in_netns(path, _lo_up)
        return path

    try:
        yield make
    finally:
        for path in made:
            delete_netns(path)


@dataclass
class FakeUpstream:
    """A DNS server of our own: ext.example and big.example, NXDOMAIN for anything else."""

    seen: list[tuple[str, str]] = field(default_factory=list)  # (name, "udp"/"tcp")

    def reply(self, wire: bytes, transport: str) -> bytes:
        query = dns.message.from_wire(wire)
        name = query.question[0].name.to_text(omit_final_dot=True)
        self.seen.append((name, transport))
        reply = dns.message.make_response(query, recursion_available=True)
        addresses = {"ext.example": ["192.0.2.7"], "big.example": BIG}.get(name)
        if addresses and query.question[0].rdtype == dns.rdatatype.A:
            reply.answer.append(
                dns.rrset.from_text_list(query.question[0].name, 60, "IN", "A", addresses)
            )
        elif addresses is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        # Over UDP always 512 bytes at most, so a big answer comes back truncated.
        if transport == "udp":
            return reply.to_wire(max_size=512, prefer_truncation=True)
        return reply.to_wire(prepend_length=True)


class _UpstreamUDP(asyncio.DatagramProtocol):
    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own datagram transport is not a DatagramTransport subclass in 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(self.upstream.reply(data, "udp"), addr)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()

    async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                writer.write(fake.reply(await reader.readexactly(length), "tcp"))
                await writer.drain()
        writer.close()

    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(
        lambda: _UpstreamUDP(fake), local_addr=(UPSTREAM, 53)
    )
    tcp = await asyncio.start_server(serve_tcp, UPSTREAM, 53, reuse_address=True)
    try:
        yield fake
    finally:
        udp.close()
        tcp.close()
        await tcp.wait_closed()


@pytest.fixture
async def resolver() -> AsyncIterator[EmbeddedDNS]:
    server = EmbeddedDNS(lookup, upstream=[UPSTREAM], reverse=reverse)
    try:
        yield server
    finally:
        await server.close()


# ---- asking from inside a namespace ------------------------------------------------------------


async def ask(
    netns: str, name: str, rdtype: str = "A", tcp: bool = False, payload: int | None = None
) -> dns.message.Message:
    """Query 127.0.0.11 from a thread inside `netns`, as a process in the container would."""
    query = dns.message.make_query(name, rdtype, use_edns=payload is not None, payload=payload or 0)

    def send() -> dns.message.Message:
        if tcp:
            return dns.query.tcp(query, RESOLVER, timeout=10)
        return dns.query.udp(query, RESOLVER, timeout=10)

    return await asyncio.to_thread(run_in_netns, netns, send)


def addresses(reply: dns.message.Message) -> set[str]:
    return {rdata.address for rrset in reply.answer for rdata in rrset}


# ---- tests -------------------------------------------------------------------------------------


async def test_known_name_resolves_over_udp_and_tcp(
    make_netns: Callable[[str], str], resolver: EmbeddedDNS, upstream: FakeUpstream
) -> None:
    ns = make_netns("c1")
    await resolver.serve("c1", ns)
    await resolver.serve("c1", ns)  # idempotent
    for tcp in (False, True):
        reply = await ask(ns, "web", tcp=tcp)
        assert reply.rcode() == dns.rcode.NOERROR
        assert addresses(reply) == {"10.0.0.2", "10.0.0.3"}
        assert reply.answer[0].ttl == 600
        # dockerd's reply flags: QR, RD echoed, RA; not authoritative.
        assert reply.flags & dns.flags.QR and reply.flags & dns.flags.RA
        assert reply.flags & dns.flags.RD and not reply.flags & dns.flags.AA
    # Names are case-insensitive; an alias is just another name of the table.
    assert addresses(await ask(ns, "WEB.")) == {"10.0.0.2", "10.0.0.3"}
    assert addresses(await ask(ns, "store")) == {"10.0.0.4"}
    assert upstream.seen == []


async def test_busybox_nslookup_in_the_namespace(
    make_netns: Callable[[str], str], resolver: EmbeddedDNS, upstream: FakeUpstream
) -> None:
    if not os.path.exists("/bin/busybox"):
        pytest.skip("busybox-static is missing (deploy/setup.sh installs it)")
    ns = make_netns("c1")
    await resolver.serve("c1", ns)
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        f"--net={ns}",
        "/bin/busybox",
        "nslookup",
        "db",
        RESOLVER,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "Address: 10.0.0.4" in text, text


async def test_aaaa_of_a_known_name_is_an_empty_noerror(
    make_netns: Callable[[str], str], resolver: EmbeddedDNS, upstream: FakeUpstream
) -> None:
    ns = make_netns("c1")
    await resolver.serve("c1", ns)
    reply = await ask(ns, "web", "AAAA")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert upstream.seen == []
    # Unknown: the upstream's word.
    reply = await ask(ns, "nowhere.example", "AAAA")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert upstream.seen == [("nowhere.example", "udp")]


async def test_unknown_names_are_forwarded(
    make_netns: Callable[[str], str], resolver: EmbeddedDNS, upstream: FakeUpstream
) -> None:
    ns = make_netns("c1")
    await resolver.serve("c1", ns)
    assert addresses(await ask(ns, "ext.example")) == {"192.0.2.7"}
    assert addresses(await ask(ns, "ext.example", tcp=True)) == {"192.0.2.7"}
    assert upstream.seen == [("ext.example", "udp"), ("ext.example", "tcp")]
    assert (await ask(ns, "nowhere.example")).rcode() == dns.rcode.NXDOMAIN


async def test_truncated_upstream_answers_are_fetched_over_tcp(
    make_netns: Callable[[str], str], resolver: EmbeddedDNS, upstream: FakeUpstream
) -> None:
    ns = make_netns("c1")
    await resolver.serve("c1", ns)
    # A client that takes 4096 bytes over UDP gets everything, fetched upstream over TCP.
    reply = await ask(ns, "big.example", payload=4096)
    assert addresses(reply) == set(BIG)
    assert not reply.flags & dns.flags.TC
    assert upstream.seen == [("big.example", "udp"), ("big.example", "tcp")]
    # A client without EDNS gets the truncated answer, and then all of it over TCP.
    assert (await ask(ns, "big.example")).flags & dns.flags.TC
    assert addresses(await ask(ns, "big.example", tcp=True)) == set(BIG)


async def test_upstream_failure_is_servfail(make_netns: Callable[[str], str]) -> None:
    ns = make_netns("c1")
    server = EmbeddedDNS(lookup, upstream=[DEAD_UPSTREAM], timeout=0.5)
    try:
        await server.serve("c1", ns)
        assert (await ask(ns, "ext.example")).rcode() == dns.rcode.SERVFAIL
        assert (await ask(ns, "ext.example", tcp=True)).rcode() == dns.rcode.SERVFAIL
        assert addresses(await ask(ns, "web")) == {"10.0.0.2", "10.0.0.3"}  # local still works
    finally:
        await server.close()


async def test_ptr_of_a_container_address(
    make_netns: Callable[[str], str], resolver: EmbeddedDNS, upstream: FakeUpstream
) -> None:
    ns = make_netns("c1")
    await resolver.serve("c1", ns)
    reply = await ask(ns, dns.reversename.from_address("10.0.0.4").to_text(), "PTR")
    assert reply.rcode() == dns.rcode.NOERROR
    assert [r.target.to_text() for r in reply.answer[0]] == ["db.backend."]
    assert reply.answer[0].ttl == 600
    assert upstream.seen == []
    # Not a container's address: forwarded.
    reply = await ask(ns, dns.reversename.from_address("10.9.9.9").to_text(), "PTR")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert upstream.seen == [("9.9.9.10.in-addr.arpa", "udp")]


def _bind_resolver_port() -> None:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((RESOLVER, 53))


async def test_stop_frees_the_port_and_serve_works_again(
    make_netns: Callable[[str], str], resolver: EmbeddedDNS, upstream: FakeUpstream
) -> None:
    ns = make_netns("c1")
    await resolver.serve("c1", ns)
    assert addresses(await ask(ns, "db", tcp=True)) == {"10.0.0.4"}
    with pytest.raises(OSError):
        await asyncio.to_thread(run_in_netns, ns, _bind_resolver_port)
    await resolver.stop("c1")
    # Checked on the loop's own thread, before the loop turns again: free means freed by
    # stop() itself, not by a close the loop had still queued.
    run_in_netns(ns, _bind_resolver_port)
    await resolver.stop("c1")  # idempotent
    await resolver.serve("c1", ns)
    assert addresses(await ask(ns, "db")) == {"10.0.0.4"}
    assert addresses(await ask(ns, "db", tcp=True)) == {"10.0.0.4"}


async def test_serving_into_another_namespace_moves_the_resolver(
    make_netns: Callable[[str], str], resolver: EmbeddedDNS, upstream: FakeUpstream
) -> None:
    before, after = make_netns("before"), make_netns("after")
    await resolver.serve("c1", before)
    await resolver.serve("c1", after)  # the container was restarted with a new namespace
    run_in_netns(before, _bind_resolver_port)  # on the loop's thread, as above
    assert addresses(await ask(after, "db")) == {"10.0.0.4"}


async def test_two_containers_have_independent_resolvers(
    make_netns: Callable[[str], str], resolver: EmbeddedDNS, upstream: FakeUpstream
) -> None:
    ns1, ns2 = make_netns("c1"), make_netns("c2")
    await resolver.serve("c1", ns1)
    await resolver.serve("c2", ns2)
    assert addresses(await ask(ns1, "web")) == {"10.0.0.2", "10.0.0.3"}
    assert addresses(await ask(ns2, "web")) == {"10.1.0.9"}
    assert addresses(await ask(ns2, "db")) == set()  # c2 does not see c1's db: forwarded
    assert upstream.seen == [("db", "udp")]
    await resolver.stop("c1")
    assert addresses(await ask(ns2, "web", tcp=True)) == {"10.1.0.9"}


def _send_garbage() -> None:
    response = dns.message.make_response(dns.message.make_query("web", "A")).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"", b"\x00", b"\x12\x34garbage-not-dns", b"\xff" * 600, response):
            s.sendto(junk, (RESOLVER, 53))
    with socket.create_connection((RESOLVER, 53), timeout=10) as s:
        s.sendall(len(b"garbage").to_bytes(2, "big") + b"garbage")
        assert s.recv(1) == b""  # the resolver hangs up on a stream of garbage
    with socket.create_connection((RESOLVER, 53), timeout=10) as s:
        s.sendall(b"\x00")  # half a length, then gone


async def test_malformed_input_does_not_kill_the_server(
    make_netns: Callable[[str], str], resolver: EmbeddedDNS, upstream: FakeUpstream
) -> None:
    ns = make_netns("c1")
    await resolver.serve("c1", ns)
    await asyncio.to_thread(run_in_netns, ns, _send_garbage)
    assert (await ask(ns, "boom")).rcode() == dns.rcode.SERVFAIL
    assert addresses(await ask(ns, "web")) == {"10.0.0.2", "10.0.0.3"}
    assert addresses(await ask(ns, "web", tcp=True)) == {"10.0.0.2", "10.0.0.3"}
    assert upstream.seen == []


def test_host_nameservers_follow_dockers_choice_of_resolv_conf(tmp_path: os.PathLike[str]) -> None:
    etc = os.path.join(tmp_path, "resolv.conf")
    systemd = os.path.join(tmp_path, "systemd-resolv.conf")

    def write(path: str, text: str) -> None:
        with open(path, "w") as f:
            f.write(text)

    write(etc, "search example\nnameserver 10.255.0.1\nnameserver 10.255.0.2\n")
    assert host_nameservers(etc, systemd) == ["10.255.0.1", "10.255.0.2"]
    write(etc, "nameserver 127.0.0.53\noptions edns0\n")
    assert host_nameservers(etc, systemd) == ["127.0.0.53"]  # no systemd file: keep the stub
    write(systemd, "nameserver 192.0.2.53\n")
    assert host_nameservers(etc, systemd) == ["192.0.2.53"]
    write(etc, "search example\n")
    assert host_nameservers(etc, systemd) == []
