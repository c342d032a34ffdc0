"""The nodes' images records end to end: a dev cluster of 2 real nodes and 1 hollow one, the
real docker CLI. An image made on one node (commit) is in that node's `images/<id>` record
before `docker commit` returns, so `docker images`, `docker info` and `affinity:image==` see it
at once; its removal likewise; the hollow node publishes its busybox. `docker images` from the
records answers what the nodes answer (`-a` still asks them: compared byte for byte)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from deploy import devcluster as dc
from deploy.dev_layout import PREFIX, etcd_endpoint
from proto.keys import Keys
from proto.kv import KV
from proto.records_pb2 import NodeImages, NodeRecord
from tests.fixtures import dev_cluster, docker

KEYS = Keys(PREFIX)
URL = f"http://{dc.MANAGER_ADDR}"
IMAGE = "flt-recorded:1"
CONTAINER = "flt-recorded-src"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2, hollow=1) as nodes:
        yield nodes


async def _records() -> dict[str, list[dict[str, Any]]]:
    """node name -> the rows of its images record, read from etcd."""
    async with await KV.connect([etcd_endpoint()]) as kv:
        names = {}
        for e in await kv.get_prefix(KEYS.nodes_prefix()):
            rec = NodeRecord()
            rec.ParseFromString(e.value)
            names[rec.id] = rec.name
        out = {}
        for e in await kv.get_prefix(KEYS.images_prefix()):
            record = NodeImages()
            record.ParseFromString(e.value)
            assert e.lease != 0  # goes with the node's lease
            out[names.get(record.node_id, record.node_id)] = json.loads(record.images_json)
        return out


def records() -> dict[str, list[dict[str, Any]]]:
    return asyncio.run(_records())


def tags(rows: list[dict[str, Any]]) -> set[str]:
    return {t for r in rows for t in r.get("RepoTags") or []}


def get(path: str) -> bytes:
    with urllib.request.urlopen(URL + path, timeout=30) as resp:
        return resp.read()


def info_images() -> int:
    return int(docker("info", "--format", "{{.Images}}").stdout.strip())


def test_every_node_publishes_its_images(cluster: dict[str, object]) -> None:
    recs = records()
    assert set(recs) == {"node-0", "node-1", "hollow-0"}
    for rows in recs.values():
        assert "busybox:latest" in tags(rows)
    assert info_images() == sum(len(rows) for rows in recs.values())


def test_commit_and_rmi_on_one_node_are_seen_at_once(cluster: dict[str, object]) -> None:
    before = info_images()
    try:
        docker("run", "--name", CONTAINER, "-e", "constraint:node==node-1", "busybox",
               "touch", "/made-here")  # fmt: skip
        docker("commit", CONTAINER, IMAGE)
        # No waiting: the commit returned after node-1's record was written.
        recs = records()
        assert IMAGE in tags(recs["node-1"])
        assert IMAGE not in tags(recs["node-0"]) | tags(recs["hollow-0"])
        assert info_images() == before + 1
        listed = docker("images", "--filter", "node=node-1", "--format", "{{.Repository}}:{{.Tag}}")
        assert IMAGE in listed.stdout.split()
        out = docker("run", "--rm", "-e", f"affinity:image=={IMAGE}", IMAGE, "ls", "/made-here")
        assert out.stdout.strip() == "/made-here"  # only node-1 has it
        docker("rmi", IMAGE)
        assert IMAGE not in tags(records()["node-1"])
        assert info_images() == before
        assert IMAGE not in docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    finally:
        docker("rm", "-f", CONTAINER, check=False)
        docker("rmi", IMAGE, check=False)


@pytest.mark.parametrize(
    "filters",
    [None, {"reference": ["busy*"]}, {"dangling": ["false"]}, {"label": ["nosuch"]}],
)
def test_images_from_records_equal_the_nodes_answer(
    cluster: dict[str, object], filters: dict[str, list[str]] | None
) -> None:
    # No intermediate images here, so `-a` (asked of the nodes) lists the same rows.
    query = "?filters=" + urllib.parse.quote(json.dumps(filters)) if filters else ""
    sep = "&" if query else "?"
    assert get(f"/v1.41/images/json{query}") == get(f"/v1.41/images/json{query}{sep}all=1")
