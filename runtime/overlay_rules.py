"""iptables for overlay bridges: isolation, forwarding and NAT, in flotilla's own chains.

Isolation lives in FLOTILLA-ISOLATION, jumped from the top of FLOTILLA-FORWARD, so its DROPs
are always seen before the generic ACCEPTs of any bridge (overlay or default). In that chain the
same-bridge RETURNs are inserted at the top and the DROPs appended, so re-adding a missing rule
can never put a DROP above the RETURN it must not shadow.
"""

from __future__ import annotations

from runtime.network import (
    FILTER_FORWARD,
    NAT_POSTROUTING,
    delete_rule,
    drop_base_chains_if_empty,
    drop_chain_if_empty,
    ensure_base_chains,
    ensure_chain,
    ensure_rule,
)

FILTER_ISOLATION = "FLOTILLA-ISOLATION"
ISOLATION_JUMP = ["-j", FILTER_ISOLATION]
# iptables' interface wildcard: every overlay bridge on this host.
ANY_OVERLAY_BRIDGE = "fl-br-+"

Rule = tuple[str, str, list[str]]  # (table, chain, rule)


def _isolation_returns(bridge: str) -> list[Rule]:
    return [("filter", FILTER_ISOLATION, ["-i", bridge, "-o", bridge, "-j", "RETURN"])]


def _isolation_drops(bridge: str, default_bridge: str, internal: bool) -> list[Rule]:
    drops = [
        ["-i", bridge, "-o", ANY_OVERLAY_BRIDGE, "-j", "DROP"],
        ["-i", bridge, "-o", default_bridge, "-j", "DROP"],
        ["-i", default_bridge, "-o", bridge, "-j", "DROP"],
    ]
    if internal:
        drops += [
            ["-i", bridge, "!", "-o", bridge, "-j", "DROP"],
            ["-o", bridge, "!", "-i", bridge, "-j", "DROP"],
        ]
    return [("filter", FILTER_ISOLATION, rule) for rule in drops]


def _accepts(bridge: str, subnet: str, internal: bool) -> list[Rule]:
    rules: list[Rule] = [("filter", FILTER_FORWARD, ["-i", bridge, "-o", bridge, "-j", "ACCEPT"])]
    if internal:
        return rules
    established = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]
    return rules + [
        ("filter", FILTER_FORWARD, ["-o", bridge, *established, "-j", "ACCEPT"]),
        ("filter", FILTER_FORWARD, ["-i", bridge, "!", "-o", bridge, "-j", "ACCEPT"]),
        ("nat", NAT_POSTROUTING, ["-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE"]),
    ]


def _all(bridge: str, subnet: str, default_bridge: str, internal: bool) -> list[Rule]:
    return (
        _isolation_returns(bridge)
        + _isolation_drops(bridge, default_bridge, internal)
        + _accepts(bridge, subnet, internal)
    )


def ensure(bridge: str, subnet: str, default_bridge: str, internal: bool) -> None:
    """Program the network's rules and drop those of the other kind (internal flipped)."""
    ensure_base_chains()
    ensure_chain("filter", FILTER_ISOLATION)
    ensure_rule("filter", FILTER_FORWARD, ISOLATION_JUMP, insert=True)
    for table, chain, rule in _isolation_returns(bridge):
        ensure_rule(table, chain, rule, insert=True)
    for table, chain, rule in _isolation_drops(bridge, default_bridge, internal):
        ensure_rule(table, chain, rule)
    for table, chain, rule in _accepts(bridge, subnet, internal):
        ensure_rule(table, chain, rule)
    wanted = _all(bridge, subnet, default_bridge, internal)
    for table, chain, rule in _all(bridge, subnet, default_bridge, not internal):
        if (table, chain, rule) not in wanted:
            delete_rule(table, chain, rule)


def delete(bridge: str, subnet: str, default_bridge: str) -> None:
    """Remove every rule of the network (either kind) and the chains left empty."""
    for internal in (False, True):
        for table, chain, rule in _all(bridge, subnet, default_bridge, internal):
            delete_rule(table, chain, rule)
    drop_chain_if_empty("filter", FILTER_ISOLATION, [(FILTER_FORWARD, ISOLATION_JUMP)])
    drop_base_chains_if_empty()
