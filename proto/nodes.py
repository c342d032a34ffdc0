"""Registered nodes, read straight from etcd: the node records agents keep under their lease.

What `flotilla list` and the dev cluster read; it imports only the etcd client and the records,
so that listing nodes does not load the agent's or the manager's stack.
"""

from __future__ import annotations

from proto.keys import DEFAULT_PREFIX, Keys
from proto.kv import KV, EtcdSecurity
from proto.records_pb2 import NodeRecord


async def list_nodes(
    endpoints: list[str], prefix: str = DEFAULT_PREFIX, security: EtcdSecurity | None = None
) -> list[NodeRecord]:
    """Every node whose lease is alive, sorted by name. Raises KVError if etcd is unreachable."""
    keys = Keys(prefix)
    async with await KV.connect(endpoints, security=security) as kv:
        entries = await kv.get_prefix(keys.nodes_prefix())
    nodes = []
    for entry in entries:
        node = NodeRecord()
        node.ParseFromString(entry.value)
        nodes.append(node)
    return sorted(nodes, key=lambda n: (n.name, n.id))
