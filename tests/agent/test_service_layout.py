"""AgentService is composed of one mixin per area: every RPC of the Agent service must be served
by exactly one of them, and none may fall through to the generated UNIMPLEMENTED stub."""

from __future__ import annotations

from agent.service import AgentService
from agent.service_base import ServiceBase
from proto import agent_pb2_grpc

RPCS = sorted(n for n in vars(agent_pb2_grpc.AgentServicer) if not n.startswith("_"))
MIXINS = [c for c in AgentService.__mro__ if issubclass(c, ServiceBase) and c is not ServiceBase]


def test_every_rpc_is_served_by_exactly_one_mixin() -> None:
    owners = {name: [m.__name__ for m in MIXINS if name in vars(m)] for name in RPCS}
    assert {name: found for name, found in owners.items() if len(found) != 1} == {}


def test_no_rpc_falls_through_to_the_unimplemented_stub() -> None:
    stubs = vars(agent_pb2_grpc.AgentServicer)
    assert [name for name in RPCS if getattr(AgentService, name) is stubs[name]] == []


def test_the_layout_sees_the_whole_service() -> None:
    # Guards the two tests above against passing on an empty list.
    assert "ContainerCreate" in RPCS and "ImageSave" in RPCS and len(MIXINS) >= 6
