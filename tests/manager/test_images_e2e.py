"""Images, volumes and events through the manager, end to end: a real 3-node dev cluster driven
by the real docker CLI. One cluster serves the module; each test removes what it made."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from deploy import devcluster as dc
from tests.fixtures import DOCKER, dev_cluster, docker

HOST = dc.docker_host()
URL = f"http://{dc.MANAGER_ADDR}"
NODES = ("node-0", "node-1", "node-2")


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(3, {}) as nodes:
        yield nodes


@pytest.fixture
def workdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="flt-images-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def http(method: str, path: str) -> tuple[int, bytes]:
    req = urllib.request.Request(URL + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def images(*args: str) -> list[dict[str, str]]:
    out = docker("images", "--no-trunc", "--format", "{{json .}}", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def on_node(node: str, repo: str) -> bool:
    return any(r["Repository"] == repo for r in images("--filter", f"node={node}"))


def busybox_ids() -> set[str]:
    return {r["ID"] for r in images() if r["Repository"] == "busybox"}


def test_images_listed_once_inspect_history(cluster: dict[str, object]) -> None:
    # The dev cluster imports busybox on each node separately (one ID per node); images with
    # one ID cluster-wide are listed once (see the import and load tests).
    ids = busybox_ids()
    assert 1 <= len(ids) <= len(NODES)
    status, body = http("GET", "/v1.41/images/json")
    assert status == 200
    listed = [i["Id"] for i in json.loads(body) if "busybox:latest" in (i["RepoTags"] or [])]
    assert len(listed) == len(set(listed)) == len(ids)
    for node in NODES:
        assert on_node(node, "busybox")
    assert images("--filter", "node=nosuchnode") == []
    assert {r["Repository"] for r in images("--filter", "reference=busy*")} == {"busybox"}
    assert images("--filter", "dangling=true") == []
    doc = json.loads(docker("image", "inspect", "busybox").stdout)[0]
    assert doc["Id"].startswith("sha256:") and "busybox:latest" in doc["RepoTags"]
    assert json.loads(docker("inspect", "busybox:latest").stdout)[0]["Id"] == doc["Id"]
    assert docker("history", "-q", "busybox").stdout.strip()
    res = docker("image", "inspect", "nosuchimage", check=False)
    assert res.returncode != 0 and "No such image" in res.stderr
    res = docker("images", "--filter", "bogus=1", check=False)
    assert res.returncode != 0 and "Invalid filter" in res.stderr


def test_tag_and_rmi_everywhere(cluster: dict[str, object]) -> None:
    try:
        docker("tag", "busybox", "flt-tag:1")
        for node in NODES:
            assert on_node(node, "flt-tag")
        tagged = {r["ID"] for r in images() if r["Repository"] == "flt-tag"}
        assert tagged == busybox_ids()
        res = docker("rmi", "flt-tag:1")
        assert res.stdout.strip() == "Untagged: flt-tag:1"  # merged: once, not once per node
        assert not any(r["Repository"] == "flt-tag" for r in images())
        res = docker("rmi", "flt-tag:1", check=False)
        assert res.returncode != 0 and "No such image" in res.stderr
        # In use on one node: refused, and still present on every node.
        docker("create", "--name", "flt-rmi-user", "-e", "constraint:node==node-1",
               "busybox", "true")  # fmt: skip
        res = docker("rmi", "busybox", check=False)
        assert res.returncode != 0 and "conflict: unable to remove" in res.stderr, res.stderr
        for node in NODES:
            assert on_node(node, "busybox")
        docker("rm", "flt-rmi-user")
        res = docker("tag", "nosuchimage", "flt-tag:2", check=False)
        assert res.returncode != 0 and "No such image" in res.stderr
    finally:
        docker("rm", "-f", "flt-rmi-user", check=False)
        docker("rmi", "flt-tag:1", check=False)


def test_import_on_every_node(cluster: dict[str, object], workdir: str) -> None:
    path = os.path.join(workdir, "rootfs.tar")
    with tarfile.open(path, "w") as tar:
        data = b"hello from flotilla\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    try:
        res = docker("import", "-m", "e2e", path, "flt-imp:1")
        image_id = res.stdout.strip().splitlines()[-1]
        assert image_id.startswith("sha256:")
        rows = [r for r in images() if r["Repository"] == "flt-imp"]
        assert [(r["Tag"], r["ID"]) for r in rows] == [("1", image_id)]  # one ID cluster-wide
        for node in NODES:
            assert on_node(node, "flt-imp")
    finally:
        docker("rmi", "flt-imp:1", check=False)


def test_save_load_round_trip(cluster: dict[str, object], workdir: str) -> None:
    path = os.path.join(workdir, "saved.tar")
    try:
        docker("tag", "busybox", "flt-rt:1")
        docker("save", "-o", path, "flt-rt:1")
        with tarfile.open(path) as tar:
            assert "manifest.json" in tar.getnames()
        docker("rmi", "flt-rt:1")
        res = docker("load", "-i", path)
        assert "Loaded image: flt-rt:1" in res.stdout
        assert res.stdout.count("Loaded image") == 1
        for node in NODES:
            assert on_node(node, "flt-rt")
        assert len([r for r in images() if r["Repository"] == "flt-rt"]) == 1
        res = docker("save", "-o", path, "nosuchimage", check=False)
        assert res.returncode != 0 and "No such image" in res.stderr
    finally:
        docker("rmi", "flt-rt:1", check=False)


def test_pull_from_an_unknown_host(cluster: dict[str, object]) -> None:
    """A registry that does not resolve (.invalid never does): dockerd's error, for a pull and
    for the pull the CLI makes when `run` finds no image (tests/manager/test_pull_e2e.py pulls
    from a real registry)."""
    url = 'Get "https://flt-nowhere.invalid/v2/": dial tcp: lookup flt-nowhere.invalid'
    res = docker("pull", "flt-nowhere.invalid/thing", check=False, timeout=60)
    assert res.returncode == 1 and f"Error response from daemon: {url}" in res.stderr
    res = docker("run", "--rm", "flt-nowhere.invalid/thing", check=False, timeout=60)
    assert res.returncode != 0
    assert "Unable to find image 'flt-nowhere.invalid/thing:latest' locally" in res.stderr
    assert url in res.stderr


def test_volumes(cluster: dict[str, object]) -> None:
    try:
        assert docker("volume", "create", "flt-vol").stdout.strip() == "flt-vol"
        assert docker("volume", "create", "node-1/flt-one").stdout.strip() == "flt-one"
        names = docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
        assert {f"{n}/flt-vol" for n in NODES} <= set(names)
        assert "node-1/flt-one" in names and "node-0/flt-one" not in names
        names = docker("volume", "ls", "-q", "--filter", "node=node-2").stdout.split()
        assert "node-2/flt-vol" in names and not any(n.startswith("node-1/") for n in names)
        doc = json.loads(docker("volume", "inspect", "node-1/flt-one").stdout)[0]
        assert doc["Name"] == "flt-one" and doc["Driver"] == "local"
        assert json.loads(docker("volume", "inspect", "flt-vol").stdout)[0]["Name"] == "flt-vol"
        res = docker("volume", "inspect", "nosuchvol", check=False)
        assert res.returncode != 0 and "no such volume" in res.stderr
        docker("volume", "rm", "flt-vol", "node-1/flt-one")
        names = docker("volume", "ls", "-q").stdout.split()
        assert not any(n.endswith(("/flt-vol", "/flt-one")) for n in names)
        res = docker("volume", "rm", "flt-vol", check=False)
        assert res.returncode != 0 and "no such volume" in res.stderr
    finally:
        docker("volume", "rm", "flt-vol", "node-1/flt-one", check=False)


def events(*args: str, timeout: float = 30) -> list[dict]:
    out = docker("events", "--format", "{{json .}}", *args, timeout=timeout).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def node_of(event: dict) -> str:
    # The CLI's {{json .}} drops the legacy top-level `node`; the actor attributes stay.
    return str(event["Actor"]["Attributes"]["node.name"])


def test_events_bounded_and_filtered(cluster: dict[str, object]) -> None:
    time.sleep(0.2)  # keep the previous test's events out of the window
    since = f"{time.time():.9f}"
    try:
        docker("volume", "create", "flt-ev")
        docker("volume", "rm", "flt-ev")
        docker("tag", "busybox", "flt-ev:1")
        time.sleep(0.5)
        until = f"{time.time():.9f}"
        got = events("--since", since, "--until", until, "--filter", "type=volume")
        pairs = sorted((e["Action"], node_of(e)) for e in got)
        assert pairs == sorted([(a, n) for a in ("create", "destroy") for n in NODES]), got
        # The raw stream carries classic Swarm's top-level `node` too.
        query = urllib.parse.urlencode(
            {"since": since, "until": until, "filters": json.dumps({"type": ["volume"]})}
        )
        status, body = http("GET", f"/v1.41/events?{query}")
        raw = [json.loads(line) for line in body.splitlines()]
        assert status == 200 and len(raw) == 2 * len(NODES)
        assert all(e["node"]["Name"] == node_of(e) and e["node"]["Ip"] for e in raw)
        window = ("--since", since, "--until", until)
        got = events(*window, "--filter", "event=create", "--filter", "node=node-1")
        assert [(e["Type"], node_of(e)) for e in got] == [("volume", "node-1")]
        got = events("--since", since, "--until", until, "--filter", "image=flt-ev:1")
        assert sorted(node_of(e) for e in got) == list(NODES)
        assert all(e["Action"] == "tag" for e in got)
        # A bounded answer whose `until` lies ahead ends once it passes, with the live events.
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [DOCKER, "events", "--format", "{{json .}}", "--filter", "type=volume",
             "--until", f"{time.time() + 3:.3f}"],
            stdout=subprocess.PIPE, text=True, env=dict(os.environ, DOCKER_HOST=HOST),
        )  # fmt: skip
        time.sleep(1)
        docker("volume", "create", "node-2/flt-ev2")
        out, _ = proc.communicate(timeout=15)
        assert time.monotonic() - t0 < 8
        got = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert [(e["Action"], node_of(e)) for e in got] == [("create", "node-2")]
    finally:
        docker("volume", "rm", "flt-ev", "node-2/flt-ev2", check=False)
        docker("rmi", "flt-ev:1", check=False)


def test_node_events(cluster: dict[str, object]) -> None:
    """A node leaving and rejoining the cluster view shows as engine_disconnect/connect."""
    proc = subprocess.Popen(
        [DOCKER, "events", "--format", "{{json .}}", "--filter", "type=swarm"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, DOCKER_HOST=HOST),
    )  # fmt: skip
    got: list[dict] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            got.append(json.loads(line))
            if len(got) == 2:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(1)
        dc.stop("node-2")
        dc.wait_unregistered("node-2")
        dc.start("node-2")
        reader.join(timeout=20)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert [(e["Action"], node_of(e)) for e in got] == [
        ("engine_disconnect", "node-2"),
        ("engine_connect", "node-2"),
    ], got
