"""Node-local networks as classic Swarm presents them: every node's built-in networks.

Each node has `bridge`, `host` and `none` (scope local). `docker network ls` shows them as
`node/name`; inspect takes a full ID, an ID prefix or `node/name` and answers with the node's own
view. A bare `bridge` names one network per node: ambiguous, so 404 as in Swarm.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from manager.cluster import Cluster
from proto import agent_pb2 as pb
from proto.docker.errors import DockerError, NotFound
from proto.records_pb2 import NodeRecord

BUILTIN = ("bridge", "host", "none")
# dockerd also refuses to create `default`: the name of the daemon's default network mode.
PREDEFINED = (*BUILTIN, "default")

Found = tuple[NodeRecord, dict[str, Any]]
T = TypeVar("T")
Candidate = tuple[str, tuple[str, ...], T]  # (network ID, names it answers to, the network)


async def node_networks(
    cluster: Cluster, verbose: bool, node_ids: list[str] | None = None
) -> list[Found]:
    """(node, network view) for every network of the given (default: all) nodes."""
    req = pb.NetworkListRequest(verbose=verbose)
    found: list[Found] = []
    for rec, result in await cluster.fan_out(lambda s: s.NetworkList(req), node_ids):
        if isinstance(result, BaseException):
            continue  # an unreachable node hides its networks, as in classic Swarm
        found += [(rec, net) for net in json.loads(result.json)]
    return found


def shown(rec: NodeRecord, net: dict[str, Any]) -> str:
    """Swarm's name for a local network in `ls`: `node/name`."""
    return f"{rec.name}/{net['Name']}"


def names(rec: NodeRecord, net: dict[str, Any]) -> tuple[str, ...]:
    """The network's own name, and Swarm's `node/name` by node name or node ID."""
    return (net["Name"], shown(rec, net), f"{rec.id}/{net['Name']}")


def candidates(found: list[Found]) -> list[Candidate[Found]]:
    return [(net["Id"], names(rec, net), (rec, net)) for rec, net in found]


def pick(ref: str, found: list[Candidate[T]]) -> T:
    """dockerd's order: full ID, then name (Swarm adds `node/name`), then ID prefix."""
    rules: list[tuple[str, Callable[[str, tuple[str, ...]], bool]]] = [
        ("ID", lambda net_id, _: net_id == ref),
        ("name", lambda _, known: ref in known),
        ("ID prefix", lambda net_id, _: net_id.startswith(ref)),
    ]
    for basis, match in rules:
        hits = [item for net_id, known, item in found if match(net_id, known)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            # dockerd's wording; classic Swarm answers an ambiguous reference with a 404.
            raise NotFound(
                f"network {ref} is ambiguous ({len(hits)} matches found based on {basis})"
            )
    raise NotFound(f"network {ref} not found")


async def local_candidates(cluster: Cluster, ref: str) -> list[Candidate[Found]]:
    """The networks `ref` may name on the nodes: one node's for `node/name`, else all."""
    node_ids = None
    if "/" in ref:
        rec = cluster.node_by_name(ref.partition("/")[0])
        if rec is None:
            return []
        node_ids = [rec.id]
    return candidates(await node_networks(cluster, True, node_ids))


def predefined_create(bare: str) -> DockerError:
    # dockerd's PredefinedNetworkError, trailing space included.
    return DockerError(f"operation is not permitted on predefined {bare} network ", 403)


def predefined_remove(name: str) -> DockerError:
    return DockerError(f"{name} is a pre-defined network and cannot be removed", 403)


def not_yet(what: str) -> DockerError:
    # 501: a Docker feature flotilla knows and deliberately does not serve yet.
    return DockerError(
        f"flotilla cannot {what} yet: use a user-defined network (docker network create NAME "
        "for one on every node, or node/NAME for one on that node)",
        501,
    )
