"""The answers the embedded resolver gives itself, from the container's networks, as dockerd's.

dockerd's resolver (libnetwork/resolver.go) answers A for a name it knows with every address
(TTL 600, shuffled: its round-robin), answers AAAA for such a name with an empty NOERROR (the
name exists, just without IPv6), answers PTR for a container address, and forwards everything
else. Its replies are SetReply + RA: QR, RD copied from the query, RA, never AA.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import dns.exception
import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

# (container_id, lowercased name without the trailing dot) -> IPv4 addresses, [] when unknown.
# The table decides which forms it knows (name, alias, short ID, name.network ...).
NameTable = Callable[[str, str], list[str]]
# (container_id, IPv4 address) -> the names (without the trailing dot) that address answers to.
ReverseTable = Callable[[str, str], list[str]]

RESPONSE_TTL = 600  # dockerd's respTTL


def local_answer(
    query: dns.message.Message,
    container_id: str,
    lookup: NameTable,
    reverse: ReverseTable | None,
) -> dns.message.Message | None:
    """The reply for a name the container's networks know, or None: forward it upstream."""
    question = query.question[0]
    if question.rdclass != dns.rdataclass.IN:
        return None
    name = question.name.to_text(omit_final_dot=True).lower()
    if question.rdtype == dns.rdatatype.A:
        addresses = lookup(container_id, name)
        if not addresses:
            return None
        reply = _reply(query)
        shuffled = random.sample(addresses, len(addresses))
        reply.answer.append(
            dns.rrset.from_text_list(
                question.name, RESPONSE_TTL, dns.rdataclass.IN, dns.rdatatype.A, shuffled
            )
        )
        return reply
    if question.rdtype == dns.rdatatype.AAAA:
        # Known without IPv6: say so, or the client would wait for an upstream NXDOMAIN.
        return _reply(query) if lookup(container_id, name) else None
    if question.rdtype == dns.rdatatype.PTR and reverse is not None:
        return _ptr_answer(query, container_id, reverse)
    return None


def _ptr_answer(
    query: dns.message.Message, container_id: str, reverse: ReverseTable
) -> dns.message.Message | None:
    question = query.question[0]
    if not question.name.is_subdomain(dns.reversename.ipv4_reverse_domain):
        return None
    try:
        address = dns.reversename.to_address(question.name)
    except (dns.exception.SyntaxError, ValueError):
        return None  # e.g. a partial 1.10.in-addr.arpa: not a container's, let upstream say
    names = reverse(container_id, address)
    if not names:
        return None
    reply = _reply(query)
    reply.answer.append(
        dns.rrset.from_text_list(
            question.name,
            RESPONSE_TTL,
            dns.rdataclass.IN,
            dns.rdatatype.PTR,
            [n + "." for n in names],
        )
    )
    return reply


def _reply(query: dns.message.Message) -> dns.message.Message:
    return dns.message.make_response(query, recursion_available=True)
