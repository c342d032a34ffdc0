"""Cluster.start against a real etcd: the desired records (create bodies) are read as keys
only unless the view needs a body — a container no node reports yet, or a host-network one
whose exposed ports only the body holds — and a desired record of a container that no longer
exists anywhere is removed."""

from __future__ import annotations

import json
from typing import Any

from manager.cluster import Cluster
from manager.cluster_records import desired_record
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import ContainerStatus, NodeRecord


async def test_start_reads_only_the_bodies_it_needs(etcd: Any) -> None:  # noqa: ANN401
    kv = await KV.connect([etcd.endpoint])
    keys = Keys("/start")
    plain = {"Image": "busybox", "HostConfig": {"NetworkMode": "default", "Memory": 1 << 20}}
    host = {
        "Image": "busybox",
        "ExposedPorts": {"8080/tcp": {}},
        "HostConfig": {"NetworkMode": "host"},
    }
    node = NodeRecord(id="n1", name="n1", addr="127.0.0.1:1")
    await kv.put(keys.node("n1"), node.SerializeToString())
    for cid, body in (("a" * 64, plain), ("b" * 64, host), ("c" * 64, plain)):
        desired = desired_record(cid, cid[:1], "n1", body).SerializeToString()
        await kv.put(keys.container(cid), desired)
    for cid, body in (("a" * 64, plain), ("b" * 64, host)):  # "c" is reported by no node
        st = ContainerStatus(
            id=cid,
            node_id="n1",
            name=cid[:1],
            image="busybox",
            state="running",
            host_config_json=json.dumps(body["HostConfig"]).encode(),
        )
        await kv.put(keys.status("n1", cid), st.SerializeToString())
    cluster = Cluster(kv, keys)
    try:
        await cluster.start()
        assert cluster.placements["a" * 64].memory == 1 << 20  # from the status record
        assert cluster.placements["b" * 64].host_ports == [("", 8080, "tcp")]  # from its body
        assert "c" * 64 not in cluster.placements
        assert await kv.get(keys.container("c" * 64)) is None
        assert await kv.get(keys.container("a" * 64)) is not None
    finally:
        await cluster.close()
        await kv.close()
