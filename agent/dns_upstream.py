"""Forwarding of the names the embedded resolver does not know to the host's resolvers.

Queries leave from the agent's own network namespace (the host's): the sockets are made on the
event loop's thread, which never leaves it. So a loopback upstream such as a local dnsmasq works
too, as dockerd's host-loopback forwarding.
"""

from __future__ import annotations

import logging
import os

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.resolver

log = logging.getLogger(__name__)

RESOLV_CONF = "/etc/resolv.conf"
# systemd-resolved's stub answers only on the host's loopback; its real upstreams are here.
SYSTEMD_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
SYSTEMD_STUB = "127.0.0.53"

FORWARD_TIMEOUT = 4.0  # dockerd's extIOTimeout, per upstream server
MAX_SERVERS = 3  # dockerd's maxExtDNS


def host_nameservers(path: str = RESOLV_CONF, systemd_path: str = SYSTEMD_RESOLV_CONF) -> list[str]:
    """The host's nameservers, as dockerd picks its resolv.conf (resolvconf.Path).

    Only a resolv.conf naming nothing but systemd-resolved's stub is swapped for the file with
    its real upstreams, and only when that file exists. No nameserver at all gives [] (every
    forwarded query then fails with SERVFAIL): we never invent public resolvers.
    """
    servers = _read_nameservers(path)
    if servers == [SYSTEMD_STUB] and os.path.exists(systemd_path):
        return _read_nameservers(systemd_path)
    return servers


def _read_nameservers(path: str) -> list[str]:
    try:
        resolver = dns.resolver.Resolver(filename=path)
    except dns.resolver.NoResolverConfiguration:  # missing file or no nameserver line
        return []
    return [str(server) for server in resolver.nameservers]


class Forwarder:
    """Sends a query to the upstream servers in order until one gives a usable answer."""

    def __init__(self, servers: list[str], timeout: float = FORWARD_TIMEOUT) -> None:
        self.servers = servers[:MAX_SERVERS]
        self._timeout = timeout

    async def forward(self, query: dns.message.Message, tcp: bool) -> dns.message.Message:
        """The first upstream answer that is not SERVFAIL/REFUSED, else SERVFAIL.

        A UDP query goes upstream over UDP and is retried over TCP when the answer comes back
        truncated; a TCP query goes over TCP (the client already asked for the full answer).
        """
        for server in self.servers:
            try:
                if tcp:
                    response = await dns.asyncquery.tcp(query, server, timeout=self._timeout)
                else:
                    response, _ = await dns.asyncquery.udp_with_fallback(
                        query, server, timeout=self._timeout, ignore_unexpected=True
                    )
            except (dns.exception.DNSException, OSError) as exc:
                log.debug("dns: upstream %s failed for %s: %r", server, query.question[0], exc)
                continue
            # As dockerd: a failing or refusing server may be transient; ask the next one.
            if response.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
                continue
            return response
        return error_reply(query, dns.rcode.SERVFAIL)


def error_reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    reply = dns.message.make_response(query, recursion_available=True)
    reply.set_rcode(rcode)
    return reply
