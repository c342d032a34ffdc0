"""What bench/scale.py measures with, apart from the manager's Engine API: one Engine API client
per task (aiohttp), the manager's RSS, and the dev etcd through its JSON gateway (header
revision, writes by key kind, db size).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass

import aiohttp

from bench.hollow import rss_mib  # noqa: F401 - the bench's one RSS reader
from deploy import dev_processes
from deploy import devcluster as dc

API = f"http://{dc.MANAGER_ADDR}/v1.41"
ETCD = f"http://{dc.etcd_endpoint()}"
IMAGE = "busybox:latest"
RESCHEDULE_LABEL = "com.docker.swarm.reschedule-policies"
SWARM_ID = "com.docker.swarm.id"


class ApiError(Exception):
    pass


def client() -> aiohttp.ClientSession:
    """One Engine API client: its own single connection, as one `docker` user's."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=300)
    )


async def raw(s: aiohttp.ClientSession, method: str, path: str, body: object = None) -> bytes:
    """The whole answer's bytes; ApiError for an error status."""
    async with s.request(method, API + path, json=body) as resp:
        data = await resp.read()
        if resp.status >= 300:
            raise ApiError(f"{method} {path}: {resp.status} {data[:300].decode(errors='replace')}")
        return data


async def call(s: aiohttp.ClientSession, method: str, path: str, body: object = None) -> object:
    data = await raw(s, method, path, body)
    return json.loads(data) if data else None


async def run_detached(s: aiohttp.ClientSession, name: str, reschedule: bool) -> str:
    """`docker run -d --name NAME busybox sleep 100000`: create, then start."""
    body: dict[str, object] = {"Image": IMAGE, "Cmd": ["sleep", "100000"]}
    if reschedule:
        body["Labels"] = {RESCHEDULE_LABEL: '["on-node-failure"]'}
    created = await call(s, "POST", f"/containers/create?name={name}", body)
    cid = str(created["Id"])  # type: ignore[index]
    await call(s, "POST", f"/containers/{cid}/start")
    return cid


async def containers(s: aiohttp.ClientSession, all: bool = False, label: str = "") -> list[dict]:
    query = "?all=1" if all else "?all=0"
    if label:
        query += "&filters=" + urllib.request.quote(json.dumps({"label": [label]}))
    return list(await call(s, "GET", "/containers/json" + query))  # type: ignore[arg-type]


def node_of(row: dict) -> str:
    """The node a `ps` row is on: Names are /node/name."""
    return str((row.get("Names") or ["/?/?"])[0]).lstrip("/").partition("/")[0]


def manager_pid() -> int:
    pids = sorted(dev_processes.manager_pids())
    if len(pids) != 1:
        raise RuntimeError(f"expected one manager process, found {pids}")
    return pids[0]


# --------------------------------------------------------------------------- etcd


def _etcd(path: str, body: dict) -> dict:
    req = urllib.request.Request(
        ETCD + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def etcd_revision() -> int:
    return int(_etcd("/v3/kv/range", {"key": _b64(dc.PREFIX), "limit": 1})["header"]["revision"])


@dataclass
class EtcdSize:
    db_mib: float
    in_use_mib: float


def etcd_size() -> EtcdSize:
    st = _etcd("/v3/maintenance/status", {})
    return EtcdSize(
        db_mib=int(st.get("dbSize", 0)) / 2**20,
        in_use_mib=int(st.get("dbSizeInUse", st.get("dbSize", 0))) / 2**20,
    )


def written_since(revision: int) -> Counter[str]:
    """Keys of the cluster put after `revision`, counted by kind (`nodes`, `status`…)."""
    prefix = dc.PREFIX + "/"
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    got = _etcd(
        "/v3/kv/range",
        {
            "key": _b64(prefix),
            "range_end": _b64(end),
            "keys_only": True,
            "min_mod_revision": str(revision + 1),
        },
    )
    kinds: Counter[str] = Counter()
    for kv in got.get("kvs", []):
        key = base64.b64decode(kv["key"]).decode(errors="replace")
        kinds[key[len(prefix) :].partition("/")[0]] += 1
    return kinds


@dataclass
class IdleWrites:
    per_s: float
    keys: Counter[str]  # keys put in the window, by kind


def idle_writes(window_s: float) -> IdleWrites:
    """etcd's revision grows by one per write (put, delete, txn); lease keep-alives are none."""
    rev0 = etcd_revision()
    time.sleep(window_s)
    rev1 = etcd_revision()
    return IdleWrites(per_s=(rev1 - rev0) / window_s, keys=written_since(rev0))
