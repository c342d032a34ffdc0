"""Containers' lifecycle and views: create, start, stop, kill, restart, pause, unpause, remove,
rename, update, wait; inspect, list and top."""

from __future__ import annotations

import asyncio
from typing import Any

from agent import identity
from agent.service_base import ServiceBase, dumps, loads, rpc
from proto import agent_pb2 as pb
from proto.docker.errors import InvalidParameter
from runtime import usage, views


class ContainersMixin(ServiceBase):
    """A container's lifecycle calls and its inspect/list/top views."""

    @rpc
    async def ContainerCreate(
        self, request: pb.ContainerCreateRequest, context: Any
    ) -> pb.ContainerCreateReply:
        body = loads(request.json, {})
        if not isinstance(body, dict):
            raise InvalidParameter("container create body must be a JSON object")
        # A manager that crashed after this create and before recording it repeats it.
        existing = identity.same_generation(self.rt, body)
        if existing is not None:
            cid = existing
        else:
            cid = (await self.rt.create(body, request.name or None)).id
        if request.start and self.rt.get(cid).status != "running":
            await self._start(cid, hold_output=False)
        await self.reported()
        return pb.ContainerCreateReply(id=cid, warnings=[], started=request.start)

    @rpc
    async def ContainerStart(self, request: pb.ContainerStartRequest, context: Any) -> pb.Empty:
        await self._start(request.id, request.hold_output)
        await self.reported()
        return pb.Empty()

    async def _start(self, cid: str, hold_output: bool) -> None:
        if self.fence is not None and identity.is_replacement(self.rt.get(cid)):
            # Its old copy may be on a node that extended its deadline because this one said
            # it could not reach etcd: not before that extension has run out.
            await asyncio.sleep(self.fence.replacement_hold_s())
        await self.rt.start(cid, hold_output=hold_output)

    @rpc
    async def ContainerStop(self, request: pb.ContainerStopRequest, context: Any) -> pb.Empty:
        timeout = request.timeout if request.HasField("timeout") else None
        await self.rt.stop(request.id, timeout)
        await self.reported()
        return pb.Empty()

    @rpc
    async def ContainerKill(self, request: pb.ContainerKillRequest, context: Any) -> pb.Empty:
        await self.rt.kill(request.id, request.signal or "SIGKILL")
        await self.reported()
        return pb.Empty()

    @rpc
    async def ContainerRestart(self, request: pb.ContainerRestartRequest, context: Any) -> pb.Empty:
        timeout = request.timeout if request.HasField("timeout") else None
        await self.rt.restart(request.id, timeout)
        await self.reported()
        return pb.Empty()

    @rpc
    async def ContainerPause(self, request: pb.ContainerRef, context: Any) -> pb.Empty:
        await self.rt.pause(request.id)
        await self.reported()
        return pb.Empty()

    @rpc
    async def ContainerUnpause(self, request: pb.ContainerRef, context: Any) -> pb.Empty:
        await self.rt.unpause(request.id)
        await self.reported()
        return pb.Empty()

    @rpc
    async def ContainerRemove(self, request: pb.ContainerRemoveRequest, context: Any) -> pb.Empty:
        await self.rt.remove(request.id, force=request.force, volumes=request.volumes)
        await self.reported()
        return pb.Empty()

    @rpc
    async def ContainerRename(self, request: pb.ContainerRenameRequest, context: Any) -> pb.Empty:
        await self.rt.rename(request.id, request.name)
        await self.reported()
        return pb.Empty()

    @rpc
    async def ContainerUpdate(
        self, request: pb.ContainerUpdateRequest, context: Any
    ) -> pb.ContainerUpdateReply:
        body = loads(request.json, {})
        if not isinstance(body, dict):
            raise InvalidParameter("update body must be a JSON object")
        warnings = await self.rt.update(request.id, body)
        await self.reported()
        return pb.ContainerUpdateReply(warnings=warnings)

    @rpc
    async def ContainerWait(
        self, request: pb.ContainerWaitRequest, context: Any
    ) -> pb.ContainerWaitReply:
        result = await self.rt.wait(request.id, request.condition or "not-running")
        code = result.get("StatusCode")
        error = result.get("Error")
        message = error.get("Message", "") if isinstance(error, dict) else (error or "")
        return pb.ContainerWaitReply(status_code=int(code or 0), error=message)

    @rpc
    async def ContainerInspect(self, request: pb.ContainerRef, context: Any) -> pb.JsonReply:
        rec = self.rt.get(request.id)
        return pb.JsonReply(json=dumps(views.inspect(self.rt, rec)))

    @rpc
    async def ContainerList(
        self, request: pb.ContainerListRequest, context: Any
    ) -> pb.ContainerListReply:
        rows = [
            dumps(views.summary(self.rt, rec))
            for rec in self.rt.list()
            if request.all or rec.status in ("running", "paused", "restarting")
        ]
        return pb.ContainerListReply(rows=rows)

    @rpc
    async def ContainerTop(self, request: pb.ContainerTopRequest, context: Any) -> pb.JsonReply:
        result = await usage.top(self.rt, request.id, request.ps_args or "-ef")
        return pb.JsonReply(json=dumps(result))
