"""The node's own calls: Ping, Info (this host and its runtime as `docker info` shows them) and
Events (the node's Docker event stream, with history for `since`)."""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any

from agent.service_base import ServiceBase, dumps, rpc
from proto import agent_pb2 as pb
from runtime import image_views


class NodeMixin(ServiceBase):
    """Ping, Info and Events."""

    @rpc
    async def Ping(self, request: pb.PingRequest, context: Any) -> pb.PingReply:
        return pb.PingReply(version=_version())

    @rpc
    async def Info(self, request: pb.InfoRequest, context: Any) -> pb.JsonReply:
        return pb.JsonReply(json=dumps(await asyncio.to_thread(self._info)))

    def _info(self) -> dict[str, Any]:
        recs = self.rt.list()
        counts = {"running": 0, "paused": 0}
        for rec in recs:
            if rec.status in counts:
                counts[rec.status] += 1
        uname = os.uname()
        info = {
            "Name": self.rt.node_name,
            "Containers": len(recs),
            "ContainersRunning": counts["running"],
            "ContainersPaused": counts["paused"],
            "ContainersStopped": len(recs) - counts["running"] - counts["paused"],
            "Images": len(image_views.list_images(self.rt.images)),
            "Driver": "overlay2",
            "KernelVersion": uname.release,
            "OperatingSystem": _os_name(),
            "OSType": "linux",
            "Architecture": platform.machine(),
            "NCPU": len(os.sched_getaffinity(0)),
            "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "DockerRootDir": self.rt.paths.root,
            "ServerVersion": _version(),
        }
        info.update(self.info_extra)
        return info

    @rpc
    async def Events(self, request: pb.EventsRequest, context: Any) -> AsyncIterator[pb.Event]:
        async for event in self.events.subscribe(request.since_ns, request.until_ns):
            yield pb.Event(json=dumps(event))


def _version() -> str:
    try:
        return metadata.version("flotilla")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"
