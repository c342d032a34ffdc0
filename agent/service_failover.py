"""Failover calls between agents: PeerEtcdStatus, asked by a node whose keep-alives fail, so it
can tell "I am cut off" (some peer still reaches etcd: let the fence deadline run out) from
"etcd is down for everyone" (extend it). See agent/fencing.py."""

from __future__ import annotations

from typing import Any

from agent.service_base import ServiceBase, rpc
from proto import agent_pb2 as pb


class FailoverMixin(ServiceBase):
    """PeerEtcdStatus."""

    @rpc
    async def PeerEtcdStatus(
        self, request: pb.PeerEtcdStatusRequest, context: Any
    ) -> pb.PeerEtcdStatusReply:
        node_id = str(self.info_extra.get("ID", ""))
        if self.fence is None:  # a server without registration (tests): knows nothing
            return pb.PeerEtcdStatusReply(
                node_id=node_id, etcd_reachable=False, last_keepalive_age_ms=-1
            )
        reachable, age_ms = self.fence.status()
        return pb.PeerEtcdStatusReply(
            node_id=node_id, etcd_reachable=reachable, last_keepalive_age_ms=age_ms
        )
