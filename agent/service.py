"""The agent's gRPC service: the manager's calls, served by this node's runtime.

`AgentService` is the one servicer registered with `add_AgentServicer_to_server`; its calls live
in one mixin per area:

  agent/service_node.py        Ping, Info, Events
  agent/service_networks.py    NetworkList (built-in networks), NetworkConnect, NetworkDisconnect
  agent/service_containers.py  container lifecycle, inspect, list, top
  agent/service_streams.py     logs, attach, exec, stats, resize
  agent/service_filesystem.py  archive stat/get/put, export, changes, commit
  agent/service_images.py      image import/load/save, list, inspect, history, tag, remove
  agent/service_build.py       docker build (ImageBuild: context in, JSON stream out)
  agent/service_volumes.py     volumes
  agent/service_drills.py      Drill (fault injection, only with `flotilla join --allow-drills`)
  agent/service_failover.py    PeerEtcdStatus (asked by a peer that cannot reach etcd)

What they share is in agent/service_base.py (the `rpc` decorator: every runtime DockerError ends
the RPC with its HTTP status and exact message, see proto/rpc_errors.py; JSON in and out; the
options-first client streams) and agent/worker_streams.py (blocking work in worker threads,
streamed in CHUNK-sized pieces with backpressure).
"""

from __future__ import annotations

from typing import Any

from agent.events import EventBus
from agent.service_build import BuildMixin
from agent.service_containers import ContainersMixin
from agent.service_drills import DrillsMixin
from agent.service_failover import FailoverMixin
from agent.service_filesystem import FilesystemMixin
from agent.service_images import ImagesMixin
from agent.service_networks import NetworksMixin
from agent.service_node import NodeMixin
from agent.service_streams import StreamsMixin
from agent.service_volumes import VolumesMixin
from proto import agent_pb2_grpc
from runtime.containers import Runtime


class AgentService(
    NodeMixin,
    NetworksMixin,
    ContainersMixin,
    StreamsMixin,
    FilesystemMixin,
    ImagesMixin,
    BuildMixin,
    VolumesMixin,
    DrillsMixin,
    FailoverMixin,
    # Last, so each mixin's call comes before the generated UNIMPLEMENTED stub.
    agent_pb2_grpc.AgentServicer,
):
    """gRPC front of one node's Runtime; image and volume operations publish events here."""

    def __init__(
        self, runtime: Runtime, events: EventBus, info_extra: dict[str, Any] | None = None
    ) -> None:
        self.rt = runtime
        self.events = events
        self.info_extra = dict(info_extra or {})
        self.fence = None  # set by start_grpc_server when the agent keeps a fence
        self.status_flush = None  # set by start_grpc_server when the agent reports status
