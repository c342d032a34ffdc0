"""The hypothesis fuzz of bench/api_fuzz.py against the real aiohttp app over a real Cluster on
a real etcd, whose two agents are fakes that refuse every call as a missing object: no case
may answer a 5xx, and every error is `{"message": …}`."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench import api_fuzz
from manager.app import make_app
from manager.cluster import Cluster
from proto import agent_pb2 as pb
from proto.docker.errors import NotFound
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import NodeRecord

CASES = 300


class _Refused:
    """What a fake agent's RPC returns: awaited or iterated (streams), a missing object."""

    def __await__(self) -> Generator[Any, None, Any]:
        raise NotFound("No such object: fuzz")
        yield  # pragma: no cover - makes this a generator

    def __aiter__(self) -> _Refused:
        return self

    async def __anext__(self) -> Any:  # noqa: ANN401
        raise NotFound("No such object: fuzz")

    async def read(self) -> Any:  # noqa: ANN401 - a server stream read message by message
        raise NotFound("No such object: fuzz")

    def cancel(self) -> None:
        pass


class FakeAgent:
    async def ContainerList(self, req: pb.ContainerListRequest) -> pb.ContainerListReply:  # noqa: N802
        return pb.ContainerListReply()

    def __getattr__(self, rpc: str) -> Any:  # noqa: ANN401
        return lambda *args, **kwargs: _Refused()


class FakeCluster(Cluster):
    def stub(self, node_id: str) -> Any:  # noqa: ANN401 - a FakeAgent stands for the stub
        return FakeAgent()


@pytest.fixture
async def client(etcd: Any) -> AsyncIterator[TestClient]:  # noqa: ANN401
    kv = await KV.connect([etcd.endpoint])
    cluster = FakeCluster(kv=kv, keys=Keys("/fuzz"))
    for i in range(2):
        rec = NodeRecord(
            id=f"ID{i}", name=f"node-{i}", addr="127.0.0.1:1", ncpu=2, memory_bytes=1 << 30
        )
        cluster.nodes[rec.id] = rec
        cluster.node_names[rec.id] = rec.name
    try:
        async with TestClient(TestServer(make_app(cluster, {}))) as client:  # type: ignore[arg-type]
            yield client
    finally:
        await kv.close()


async def test_no_input_gives_a_5xx(client: TestClient) -> None:
    statuses: collections.Counter[int] = collections.Counter()

    async def send(
        method: str, path: str, params: dict[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        # Headers within a generous bound, or the manager hangs on this input.
        resp = await asyncio.wait_for(
            client.request(method, path, params=params, data=body, headers=headers), 30
        )
        statuses[resp.status] += 1
        async with resp:
            if resp.status < 400:
                return resp.status, b""  # a success may be a stream (events, logs, wait)
            return resp.status, await asyncio.wait_for(resp.read(), 30)

    result = await api_fuzz.run(send, CASES)
    assert result.fuzz_cases == CASES
    assert (result.fuzz_5xx, result.failures) == (0, [])
    # The cases reach past the decoding: refusals, missing objects and successes.
    assert {200, 400, 404} <= set(statuses), statuses


def test_cases_are_the_same_on_every_run() -> None:
    assert api_fuzz.cases(20) == api_fuzz.cases(20)


async def test_wrong_types_answer_in_dockerds_words(client: TestClient) -> None:
    async def post(path: str, body: bytes) -> tuple[int, Any]:
        resp = await client.post(path, data=body, headers={"Content-Type": "application/json"})
        return resp.status, json.loads(await resp.read())

    field = "Go struct field"
    for path, body, message in [
        (
            "/containers/create",
            b'{"Image": "busybox", "Cmd": 5}',
            f"json: cannot unmarshal number into {field} CreateRequest.Config.Cmd of type string",
        ),
        (
            "/containers/create",
            b'{"Image": "busybox", "HostConfig": {"Memory": "1g"}}',
            "json: cannot unmarshal string into "
            f"{field} HostConfig.HostConfig.Resources.Memory of type int64",
        ),
        (
            "/containers/create",
            b'{"image": "busybox", "env": "A=1"}',
            f"json: cannot unmarshal string into {field} CreateRequest.Config.Env of type []string",
        ),
        (
            "/networks/create",
            b'{"Name": "n", "IPAM": {"Config": [{"Subnet": 10}]}}',
            "json: cannot unmarshal number into "
            f"{field} IPAMConfig.CreateOptions.IPAM.Config.Subnet of type string",
        ),
        (
            "/volumes/create",
            b'{"Name": ["v"]}',
            f"json: cannot unmarshal array into {field} CreateOptions.Name of type string",
        ),
        (
            "/containers/web/update",
            b'{"CpuShares": 1.5}',
            f"json: cannot unmarshal number 1.5 into {field} UpdateConfig.Resources.CpuShares "
            "of type int64",
        ),
        ("/containers/create", b'{"Image":', "unexpected EOF"),
        (
            "/containers/create",
            b"[1]",
            "json: cannot unmarshal array into Go value of type container.CreateRequest",
        ),
        ("/networks/create", b'{"Name": "n"} x', None),
    ]:
        status, doc = await post(path, body)
        if message is None:
            assert (status, doc) == (400, {"message": "unexpected content after JSON"})
        else:
            assert (status, doc) == (400, {"message": f"invalid JSON: {message}"}), path
    status, doc = await post("/containers/create", b"")
    assert (status, doc) == (400, {"message": "invalid JSON: got EOF while reading request body"})
    status, doc = await post("/containers/create", b'{"HostConfig": {}}')
    assert (status, doc) == (
        400,
        {"message": "config cannot be empty in order to create a container"},
    )


async def test_bad_filters_are_invalid_filter(client: TestClient) -> None:
    for raw in ("{bad", "[]", '{"name": "x"}', '{"name": {"x": 1}}', '{"name": [1]}'):
        for path in ("/containers/json", "/networks", "/volumes", "/images/json"):
            resp = await client.get(path, params={"filters": raw})
            assert (resp.status, await resp.json()) == (400, {"message": "invalid filter"}), path


async def test_json_bodies_are_bounded(client: TestClient) -> None:
    from manager.errors import MAX_JSON_BODY

    body = b'{"Image": "' + b"x" * MAX_JSON_BODY + b'"}'
    resp = await client.post("/containers/create", data=body)
    assert resp.status == 413
    assert (await resp.json())["message"].startswith("http: request body too large")
