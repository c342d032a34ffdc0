"""The node's networks: NetworkList (its built-in networks: bridge, host, none) and the
connect/disconnect of a container here to an overlay network (the manager resolved the network
and found the container's node)."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.service_base import ServiceBase, dumps, loads, rpc
from proto import agent_pb2 as pb
from proto.docker.errors import InvalidParameter


def _body(data: bytes) -> dict[str, Any]:
    body = loads(data, {})
    if not isinstance(body, dict) or not isinstance(body.get("Container", ""), str):
        raise InvalidParameter("json: cannot unmarshal the request body")
    return body


class NetworksMixin(ServiceBase):
    """NetworkList, NetworkConnect and NetworkDisconnect."""

    @rpc
    async def NetworkList(self, request: pb.NetworkListRequest, context: Any) -> pb.JsonReply:
        # A worker thread: the first call makes the networks' identities on disk.
        views = await asyncio.to_thread(self.rt.networks.views, self.rt.list(), request.verbose)
        return pb.JsonReply(json=dumps(views))

    @rpc
    async def NetworkConnect(self, request: pb.NetworkConnectRequest, context: Any) -> pb.Empty:
        body = _body(request.json)
        config = body.get("EndpointConfig") or {}
        if not isinstance(config, dict):
            raise InvalidParameter(
                "json: cannot unmarshal into Go struct field NetworkConnect.EndpointConfig of "
                "type network.EndpointSettings"
            )
        await self.rt.connect(body.get("Container", ""), request.network_id, config)
        await self.reported()
        return pb.Empty()

    @rpc
    async def NetworkDisconnect(
        self, request: pb.NetworkDisconnectRequest, context: Any
    ) -> pb.Empty:
        body = _body(request.json)
        force = body.get("Force", False)
        if not isinstance(force, bool):
            raise InvalidParameter(
                "json: cannot unmarshal into Go struct field NetworkDisconnect.Force of type bool"
            )
        await self.rt.disconnect(body.get("Container", ""), request.network_id, force)
        await self.reported()
        return pb.Empty()
