"""The hollow node's in-memory runtime (runtime/hollow.py): the lifecycle and events a real
node reports, served through the agent's real gRPC service, and clear refusals for the rest."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from agent.events import EventBus
from agent.server import bound_port, start_grpc_server
from agent.status import container_status
from proto import agent_pb2 as pb
from proto.docker.errors import Conflict, DockerError, NotFound, NotModified
from proto.rpc import agent_client
from runtime import views
from runtime.hollow import HollowRuntime, simulated_exit
from runtime.hollow_images import BUSYBOX_ID

Events = list[tuple[str, str, dict[str, str]]]


def _runtime() -> tuple[HollowRuntime, Events]:
    seen: Events = []
    rt = HollowRuntime("hollow-0", events=lambda t, a, i, attrs: seen.append((a, i, attrs)))
    return rt, seen


def _actions(seen: Events, cid: str) -> list[str]:
    return [a for a, i, _ in seen if i == cid]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_simulated_exit_only_for_known_commands() -> None:
    assert simulated_exit(["true"]) == (0.0, 0)
    assert simulated_exit(["/bin/false"]) == (0.0, 1)
    assert simulated_exit(["sh", "-c", "exit 3"]) == (0.0, 3)
    assert simulated_exit(["sleep", "2"]) == (2.0, 0)
    assert simulated_exit(["sleep", "1000", "&&", "true"]) is None
    assert simulated_exit(["sh"]) is None
    assert simulated_exit(["sh", "-c", "exit $X"]) is None


async def test_lifecycle_and_events_as_a_real_node() -> None:
    rt, seen = _runtime()
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "1000"]}, "web")
    assert rec.status == "created" and rec.image_id == BUSYBOX_ID and rec.name == "web"
    assert rt.get("web") is rec and rt.get(rec.id[:8]) is rec
    await rt.start("web")
    assert rec.status == "running" and rec.pid > 0 and rec.net.ip.startswith("172.17.")
    with pytest.raises(NotModified):
        await rt.start("web")
    await rt.pause("web")
    with pytest.raises(Conflict, match="paused"):
        await rt.remove("web")
    await rt.unpause("web")
    with pytest.raises(Conflict, match="cannot remove a running container"):
        await rt.remove("web")
    await rt.stop("web")
    assert rec.status == "exited" and rec.exit_code == 143 and rec.pid == 0
    with pytest.raises(NotModified):
        await rt.stop("web")
    await rt.remove("web")
    with pytest.raises(NotFound, match="No such container: web"):
        rt.get("web")
    assert _actions(seen, rec.id) == [
        "create", "start", "pause", "unpause", "kill", "die", "stop", "destroy",
    ]  # fmt: skip
    die = next(attrs for a, i, attrs in seen if a == "die")
    assert die["exitCode"] == "143" and die["name"] == "web" and die["image"] == "busybox"
    # The status record the reporter writes is built from it as from a real record.
    status = container_status(rt, rec, "N")
    assert status.state == "exited"
    # with its ps row, as ContainerList answers it, Status left for the manager to write
    row = json.loads(status.ps_row_json)
    assert row["Id"] == rec.id and row["Names"] == ["/web"] and row["State"] == "exited"
    assert row["Status"] == "" and list(row) == list(views.summary(rt, rec))


async def test_natural_exit_wait_restart_policy_and_auto_remove() -> None:
    rt, seen = _runtime()
    rec = await rt.create({"Image": "busybox", "Cmd": ["sh", "-c", "exit 3"]})
    waiter = asyncio.ensure_future(rt.wait(rec.id, "next-exit"))
    await rt.start(rec.id)
    assert (await asyncio.wait_for(waiter, 5))["StatusCode"] == 3
    assert rec.status == "exited" and rec.exit_code == 3

    auto = await rt.create(
        {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"AutoRemove": True}}
    )
    removed = asyncio.ensure_future(rt.wait(auto.id, "removed"))
    await rt.start(auto.id)
    await asyncio.wait_for(removed, 5)
    assert auto.id not in {r.id for r in rt.list()}
    assert _actions(seen, auto.id) == ["create", "start", "die", "destroy"]

    policy = {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 1}}
    failing = await rt.create({"Image": "busybox", "Cmd": ["false"], "HostConfig": policy})
    await rt.start(failing.id)
    await _settle()
    assert failing.status == "restarting"
    await rt.kill(failing.id)  # a restarting container is stopped for good
    assert failing.status == "exited"
    await rt.close()


async def test_kill_signals() -> None:
    rt, seen = _runtime()
    rec = await rt.create({"Image": "busybox", "Cmd": ["sleep", "1000"]})
    await rt.start(rec.id)
    await rt.kill(rec.id, "SIGWINCH")  # its default action is to ignore
    assert rec.status == "running"
    await rt.kill(rec.id, "SIGKILL")
    assert rec.status == "exited" and rec.exit_code == 137
    with pytest.raises(Conflict, match="is not running"):
        await rt.kill(rec.id)
    assert _actions(seen, rec.id)[-3:] == ["kill", "kill", "die"]


async def test_refusals_are_docker_errors() -> None:
    rt, _ = _runtime()
    with pytest.raises(NotFound, match="No such image: nginx:latest"):
        await rt.create({"Image": "nginx"})
    with pytest.raises(DockerError, match="volumes is not supported") as err:
        await rt.create({"Image": "busybox", "HostConfig": {"Binds": ["data:/data"]}})
    assert err.value.status == 501
    with pytest.raises(DockerError, match="user-defined networks"):
        await rt.create({"Image": "busybox", "HostConfig": {"NetworkMode": "backend"}})
    with pytest.raises(DockerError, match="exec is not supported"):
        rt.execs.create("x", {})
    with pytest.raises(DockerError, match="not supported"):
        rt.images.add_layer("x", lambda p: p)
    assert rt.images.resolve("docker.io/library/busybox:latest") == BUSYBOX_ID
    assert rt.images.resolve(BUSYBOX_ID[7:19]) == BUSYBOX_ID


async def test_served_by_the_real_agent_service() -> None:
    rt, _ = _runtime()
    bus = EventBus()
    server = await start_grpc_server(
        rt,  # type: ignore[arg-type]
        bus,
        "127.0.0.1:0",
        info_extra={"Name": "hollow-0"},
    )
    stub = agent_client(f"127.0.0.1:{bound_port(server)}")
    try:
        info = json.loads((await stub.Info(pb.InfoRequest())).json)
        assert info["Name"] == "hollow-0" and info["Images"] == 1
        images = json.loads((await stub.ImageList(pb.ImageListRequest())).json)
        assert [i["RepoTags"] for i in images] == [["busybox:latest"]]
        image = json.loads((await stub.ImageInspect(pb.ImageRef(ref="busybox"))).json)
        assert image["Id"] == BUSYBOX_ID and image["Config"]["Cmd"] == ["sh"]
        body = {"Image": "busybox", "Cmd": ["sleep", "1000"], "ExposedPorts": {"80/tcp": {}}}
        body["HostConfig"] = {"PortBindings": {"80/tcp": [{"HostPort": ""}]}}
        created = await stub.ContainerCreate(
            pb.ContainerCreateRequest(json=json.dumps(body).encode(), name="api")
        )
        await stub.ContainerStart(pb.ContainerStartRequest(id=created.id))
        rows = (await stub.ContainerList(pb.ContainerListRequest(all=False))).rows
        row: dict[str, Any] = json.loads(rows[0])
        assert row["Names"] == ["/api"] and row["State"] == "running"
        assert row["Ports"][0]["PrivatePort"] == 80 and row["Ports"][0]["PublicPort"] >= 32768
        view = json.loads((await stub.ContainerInspect(pb.ContainerRef(id="api"))).json)
        assert view["State"]["Running"] and view["Config"]["Cmd"] == ["sleep", "1000"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ContainerTop(pb.ContainerTopRequest(id=created.id))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "not supported on a hollow node" in (err.value.details() or "")
        await stub.ContainerRemove(pb.ContainerRemoveRequest(id=created.id, force=True))
    finally:
        await stub.channel.close()  # type: ignore[attr-defined]
        await server.stop(None)
