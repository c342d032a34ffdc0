"""The node's volumes: create, list, inspect and remove, with their Docker volume events."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.service_base import ServiceBase, dumps, loads, rpc
from proto import agent_pb2 as pb
from proto.docker.errors import InvalidParameter


class VolumesMixin(ServiceBase):
    """Volume create, list, inspect and remove."""

    @rpc
    async def VolumeCreate(self, request: pb.VolumeCreateRequest, context: Any) -> pb.JsonReply:
        body = loads(request.json, {})
        if not isinstance(body, dict):
            raise InvalidParameter("volume create body must be a JSON object")
        volumes = self.rt.volumes
        existed = bool(body.get("Name")) and volumes.exists(body["Name"])
        view = await asyncio.to_thread(
            volumes.create,
            body.get("Name") or None,
            body.get("Driver") or "local",
            body.get("DriverOpts") or {},
            body.get("Labels") or {},
        )
        if not existed:
            self.events.publish("volume", "create", view["Name"], {"driver": view["Driver"]})
        return pb.JsonReply(json=dumps(view))

    @rpc
    async def VolumeList(self, request: pb.VolumeListRequest, context: Any) -> pb.JsonReply:
        filters = loads(request.filters, None)
        rows = await asyncio.to_thread(self.rt.volumes.list_volumes, filters)
        return pb.JsonReply(json=dumps({"Volumes": rows, "Warnings": None}))

    @rpc
    async def VolumeInspect(self, request: pb.VolumeRef, context: Any) -> pb.JsonReply:
        view = await asyncio.to_thread(self.rt.volumes.inspect, request.name)
        return pb.JsonReply(json=dumps(view))

    @rpc
    async def VolumeRemove(self, request: pb.VolumeRemoveRequest, context: Any) -> pb.Empty:
        volumes = self.rt.volumes
        existed = volumes.exists(request.name)
        users = self.rt.volume_users(request.name)
        await asyncio.to_thread(volumes.remove, request.name, request.force, users)
        if existed:
            self.events.publish("volume", "destroy", request.name, {"driver": "local"})
        return pb.Empty()
