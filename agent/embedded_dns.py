"""The embedded DNS resolver of containers on user-defined networks, at 127.0.0.11:53 (UDP+TCP).

One resolver per container, as dockerd's: its sockets are bound inside the container's network
namespace, but served by the agent's event loop. They are made on a throwaway thread that
setns()'s into the container's namespace (runtime.netns.run_in_netns); a socket keeps the
namespace it was made in, and the event loop's thread never leaves the host's. Names the
container's networks know are answered here (agent/dns_names.py); everything else is forwarded
from the host's namespace to the host's resolvers (agent/dns_upstream.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
from pyroute2 import IPRoute

from agent.dns_names import NameTable, ReverseTable, local_answer
from agent.dns_upstream import FORWARD_TIMEOUT, Forwarder, error_reply, host_nameservers
from runtime.netns import run_in_netns

__all__ = ["EmbeddedDNS", "NameTable", "ReverseTable"]

log = logging.getLogger(__name__)

RESOLVER_ADDRESS = "127.0.0.11"
RESOLVER_PORT = 53
MAX_CONCURRENT = 1024  # dockerd's maxConcurrent queries per resolver; beyond: REFUSED
TCP_IDLE_TIMEOUT = 8.0  # as miekg/dns's server (dockerd's): idle TCP clients are dropped
UDP_PAYLOAD_NO_EDNS = 512


class EmbeddedDNS:
    """Serves 127.0.0.11:53 in the network namespaces of the containers it is asked to.

    `lookup` and `reverse` are called on the event loop for every query: they must be quick,
    in-memory lookups. Without `reverse`, PTR queries are all forwarded. Without `upstream`, the
    host's resolv.conf is read once, here (a small local file, as dockerd reads it at start).
    """

    def __init__(
        self,
        lookup: NameTable,
        upstream: list[str] | None = None,
        reverse: ReverseTable | None = None,
        timeout: float = FORWARD_TIMEOUT,
    ) -> None:
        self._lookup = lookup
        self._reverse = reverse
        servers = host_nameservers() if upstream is None else upstream
        self._forwarder = Forwarder(servers, timeout)
        self._listeners: dict[str, _Listener] = {}
        self._lock = asyncio.Lock()

    @property
    def upstream(self) -> list[str]:
        return list(self._forwarder.servers)

    async def serve(self, container_id: str, netns_path: str) -> None:
        """Answer at 127.0.0.11:53 inside `netns_path`; a no-op when already doing so there.

        Serving a container again with another namespace (it was restarted) moves it there.
        """
        async with self._lock:
            current = self._listeners.get(container_id)
            if current is not None and current.netns_path == netns_path:
                return
            if current is not None:
                del self._listeners[container_id]
                await current.close()
            udp, tcp = await asyncio.to_thread(run_in_netns, netns_path, _bind_sockets)
            listener = _Listener(self, container_id, netns_path)
            try:
                await listener.start(udp, tcp)
            except BaseException:
                await listener.close()
                udp.close()
                tcp.close()
                raise
            self._listeners[container_id] = listener

    async def stop(self, container_id: str) -> None:
        """Close the container's sockets; a no-op when it has none."""
        async with self._lock:
            listener = self._listeners.pop(container_id, None)
            if listener is not None:
                await listener.close()

    async def close(self) -> None:
        async with self._lock:
            listeners = list(self._listeners.values())
            self._listeners.clear()
            for listener in listeners:
                await listener.close()

    async def respond(self, container_id: str, wire: bytes, tcp: bool) -> bytes | None:
        """The wire reply to one query (length-prefixed for TCP), or None: drop it."""
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
            log.debug("dns: %s: dropped a malformed query: %r", container_id[:12], exc)
            return None
        if query.flags & dns.flags.QR or len(query.question) != 1:
            return None  # a response (maybe spoofed, maybe looped) or nothing to answer
        try:
            reply = await self._answer(container_id, query, tcp)
        except Exception:
            # A bug or a broken name table must not kill the resolver; the client learns it.
            log.exception("dns: %s: answering %s failed", container_id[:12], query.question[0])
            reply = error_reply(query, dns.rcode.SERVFAIL)
        max_size = 65535 if tcp else _udp_payload(query)
        return reply.to_wire(max_size=max_size, prefer_truncation=True, prepend_length=tcp)

    async def _answer(
        self, container_id: str, query: dns.message.Message, tcp: bool
    ) -> dns.message.Message:
        if query.opcode() != dns.opcode.QUERY:
            return error_reply(query, dns.rcode.NOTIMP)
        reply = local_answer(query, container_id, self._lookup, self._reverse)
        if reply is not None:
            return reply
        return await self._forwarder.forward(query, tcp)


def _udp_payload(query: dns.message.Message) -> int:
    """The largest UDP reply the client accepts: its EDNS payload size, else 512."""
    return query.payload if query.edns >= 0 else UDP_PAYLOAD_NO_EDNS


def _bind_sockets() -> tuple[socket.socket, socket.socket]:
    """The UDP and the listening TCP socket on 127.0.0.11:53 of this thread's namespace."""
    # 127.0.0.11 is local only when lo is up; the runtime brings it up, but a resolver
    # served before that (or into a namespace made elsewhere) must not fail on it.
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind((RESOLVER_ADDRESS, RESOLVER_PORT))
        # Connections of a stopped resolver linger in TIME_WAIT; serving again must still bind.
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((RESOLVER_ADDRESS, RESOLVER_PORT))
        tcp.listen(socket.SOMAXCONN)
        udp.setblocking(False)
        tcp.setblocking(False)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


@dataclass(eq=False)
class _Listener:
    """One container's resolver: its UDP endpoint, its TCP server and the queries in flight."""

    resolver: EmbeddedDNS
    container_id: str
    netns_path: str
    udp: asyncio.DatagramTransport | None = None
    udp_closed: asyncio.Future[None] | None = None
    tcp: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, udp: socket.socket, tcp: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.udp_closed = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self), sock=udp)
        self.udp = transport
        self.tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)

    async def close(self) -> None:
        """Stop serving; on return both ports are free to bind again."""
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.tcp is not None:
            await self.tcp.wait_closed()
        if self.udp is not None and self.udp_closed is not None:
            # A datagram transport closes its socket on a later turn of the loop, not in
            # close(): a container restarted at once would find its resolver's port taken.
            await self.udp_closed

    def spawn(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run `work` as a query in flight; False (not run) when too many are."""
        if len(self.tasks) >= MAX_CONCURRENT:
            work.close()
            return False
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def reply_udp(self, wire: bytes, addr: tuple[str, int]) -> None:
        reply = await self.resolver.respond(self.container_id, wire, tcp=False)
        if reply is not None and self.udp is not None and not self.udp.is_closing():
            self.udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)  # so close() ends open connections too
        try:
            while True:
                wire = await _read_tcp_message(reader)
                if wire is None:
                    return
                reply = await self.resolver.respond(self.container_id, wire, tcp=True)
                if reply is None:
                    return  # malformed: a stream that sent garbage is not worth keeping
                writer.write(reply)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self.tasks.discard(task)
            writer.close()


async def _read_tcp_message(reader: asyncio.StreamReader) -> bytes | None:
    """One DNS-over-TCP message (RFC 1035 4.2.2: 2-byte length first); None at EOF or idle."""
    try:
        async with asyncio.timeout(TCP_IDLE_TIMEOUT):
            length = int.from_bytes(await reader.readexactly(2), "big")
            return await reader.readexactly(length)
    except (asyncio.IncompleteReadError, TimeoutError):
        return None


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: _Listener) -> None:
        self._listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self._listener.spawn(self._listener.reply_udp(data, addr)):
            self._refuse(data, addr)

    def _refuse(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(dns.exception.DNSException, ValueError, UnicodeError):
            query = dns.message.from_wire(data)
            reply = error_reply(query, dns.rcode.REFUSED).to_wire()
            if self._listener.udp is not None:
                self._listener.udp.sendto(reply, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        closed = self._listener.udp_closed
        if closed is not None and not closed.done():
            closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors of earlier replies (a client that went away): nothing to do.
        log.debug("dns: %s: udp error %r", self._listener.container_id[:12], exc)
