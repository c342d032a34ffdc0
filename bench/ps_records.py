"""`docker ps` from status records, in process: 1,000 nodes, 30,000 containers (a row as an
agent writes it: ports, labels, a network, a mount), the real aiohttp app over a Cluster whose
nodes are never asked. Prints the CPU time (of this one process: client and server, so a busy
machine skews it less than wall time) of the first request (every row parsed), of later ones
(rows cached) with and without --all, and of their parts; the last line is JSON. A measure to
see where time goes, not a test.
Run: `python bench/ps_records.py [--nodes 1000] [--containers 30000] [--repeat 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from manager.api.container_list import PS_ROWS_KEY  # noqa: E402
from manager.app import make_app  # noqa: E402
from manager.cluster import Cluster  # noqa: E402
from proto.keys import Keys  # noqa: E402
from proto.records_pb2 import ContainerStatus, NodeRecord  # noqa: E402


def _row(cid: str, name: str, state: str) -> dict[str, Any]:
    return {
        "Id": cid,
        "Names": [f"/{name}"],
        "Image": "nginx:latest",
        "ImageID": "sha256:" + "e" * 64,
        "Command": "nginx -g 'daemon off;'",
        "Created": 1_700_000_000 + int(cid[:6], 16) % 100_000,
        "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"}],
        "Labels": {"com.docker.swarm.id": cid[::-1], "app": "web", "tier": "front"},
        "State": state,
        "Status": "",
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {
            "Networks": {
                "bridge": {
                    "IPAMConfig": None,
                    "Links": None,
                    "Aliases": None,
                    "NetworkID": "",
                    "EndpointID": cid,
                    "Gateway": "172.17.0.1",
                    "IPAddress": "172.17.0.2",
                    "IPPrefixLen": 16,
                    "IPv6Gateway": "",
                    "GlobalIPv6Address": "",
                    "GlobalIPv6PrefixLen": 0,
                    "MacAddress": "02:42:ac:11:00:02",
                    "DriverOpts": None,
                }
            }
        },
        "Mounts": [{"Type": "volume", "Name": "data", "Destination": "/data", "RW": True}],
        "Health": {"Status": "none", "FailingStreak": 0},
    }


class QuietCluster(Cluster):
    def stub(self, node_id: str) -> Any:  # noqa: ANN401
        raise AssertionError("a node was asked")


def build(nodes: int, containers: int) -> Cluster:
    cluster = QuietCluster(kv=None, keys=Keys("/flotilla"))  # type: ignore[arg-type]
    for n in range(nodes):
        nid = f"{n:064x}"
        cluster.nodes[nid] = NodeRecord(
            id=nid, name=f"node-{n}", addr=f"10.1.{n // 250}.{n % 250}:1"
        )
        cluster.node_names[nid] = f"node-{n}"
    now = time.time_ns()
    for c in range(containers):
        cid = f"{c * 2654435761 % (1 << 64):016x}".ljust(64, "a")
        state = "running" if c % 10 else "exited"
        cluster.statuses[cid] = ContainerStatus(
            id=cid,
            node_id=f"{c % nodes:064x}",
            name=f"c{c}",
            image="nginx:latest",
            state=state,
            started_at_ns=now - 3600 * 10**9,
            finished_at_ns=now if state == "exited" else 0,
            labels={"com.docker.swarm.id": cid[::-1], "app": "web", "tier": "front"},
            ps_row_json=json.dumps(_row(cid, f"c{c}", state)).encode(),
        )
    return cluster


async def _time(client: TestClient, query: str) -> tuple[float, int]:
    t0 = time.process_time()
    resp = await client.get(f"/v1.41/containers/json{query}")
    body = await resp.read()
    assert resp.status == 200, body[:200]
    return (time.process_time() - t0) * 1000, len(body)


async def main(nodes: int, containers: int, repeat: int) -> dict[str, Any]:
    cluster = build(nodes, containers)
    async with TestClient(TestServer(make_app(cluster, {}))) as client:
        first, size = await _time(client, "?all=1")
        runs = {}
        for name, query in (
            ("all", "?all=1"),
            ("running", ""),
            ("name_filter", '?all=1&filters={"name":["c1234$"]}'),
            ("limit_10", "?limit=10"),
        ):
            runs[name] = statistics.median([(await _time(client, query))[0] for _ in range(repeat)])
        rows = client.app[PS_ROWS_KEY]
        # The parts of a cached --all listing.
        t0 = time.process_time()
        live = rows.live_rows(cluster.statuses, cluster.nodes, True)
        t1 = time.process_time()
        live.sort(key=lambda r: (r.row.get("Created", 0), r.cid), reverse=True)
        t2 = time.process_time()
        now = time.time_ns()
        pieces = [r.json(now, False) for r in live]
        t3 = time.process_time()
        text = b"[" + b",".join(pieces) + b"]"
        t4 = time.process_time()
        # What the same answer costs as dicts through json.dumps (the fan-out's last step).
        dicts = [json.loads(p) for p in pieces]
        t5 = time.process_time()
        json.dumps(dicts)
        t6 = time.process_time()
    ms = 1000.0
    result = {
        "nodes": nodes,
        "containers": containers,
        "response_bytes": size,
        "first_all_ms": round(first, 1),
        **{f"{k}_ms": round(v, 1) for k, v in runs.items()},
        "part_collect_ms": round((t1 - t0) * ms, 1),
        "part_sort_ms": round((t2 - t1) * ms, 1),
        "part_status_and_row_json_ms": round((t3 - t2) * ms, 1),
        "part_join_ms": round((t4 - t3) * ms, 1),
        "compare_json_dumps_of_dicts_ms": round((t6 - t5) * ms, 1),
        "text_len": len(text),
    }
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--containers", type=int, default=30000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    out = asyncio.run(main(args.nodes, args.containers, args.repeat))
    for key, value in out.items():
        print(f"{key:32} {value}")
    print(json.dumps(out))
