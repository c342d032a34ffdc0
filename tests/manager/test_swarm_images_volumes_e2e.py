"""Classic Swarm's own image and volume tests (docker/swarm test/integration/api/{images,history,
import,load,rmi,save,tag,volume}.bats), re-expressed as docker CLI calls against a 2-node dev
cluster. Each test names the bats file and case it stands for; docs/swarm-compat.md has the map.

Swarm's tests put an image on one engine with `docker -H ${HOSTS[i]} tag|commit`; here a commit
of a container pinned to that node does it (the manager has no per-node tag). Tests that remove
busybox get it back from `reset` (swarm_compat.py) afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator

import pytest

from deploy import devcluster as dc
from tests.fixtures import DOCKER, dev_cluster, docker
from tests.manager.swarm_compat import image_refs, out, reset

NODES = ("node-0", "node-1")


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(2, {}) as nodes:
        yield nodes


@pytest.fixture(autouse=True)
def clean(cluster: dict[str, object]) -> Iterator[None]:
    yield
    reset(cluster)


def image_on(node: str, name: str, *changes: str) -> None:
    """`docker -H ${HOSTS[i]} commit` of Swarm's tests: an image only `node` holds."""
    cid = docker("create", "-e", f"constraint:node=={node}", "busybox").stdout.strip()
    docker("commit", *(a for c in changes for a in ("-c", c)), cid, name)
    docker("rm", cid)


def names(*args: str) -> list[str]:
    """`docker images ARGS` repositories, newest first, as the CLI lists them."""
    return [ref.split(":")[0] for ref in image_refs(*args)]


def is_tar(path: str) -> bool:
    return os.path.getsize(path) > 0 and tarfile.is_tarfile(path)


# --- images.bats, history.bats ------------------------------------------------------------------


def test_images() -> None:
    """images.bats "docker images": grouping, before/since/node/reference filters, -a. Swarm's
    `create_new_image 3` commits busybox_<node>_<i> on each engine, a second apart."""
    for node in NODES:
        for i in range(3):
            time.sleep(1)  # distinct creation times, as in Swarm's helper
            image_on(node, f"busybox_{node[-1]}_{i}:latest")
    made = [f"busybox_{n[-1]}_{i}" for n in NODES for i in range(3)]
    assert names() == [*reversed(made), "busybox"]  # busybox once: grouped by ID
    assert names("--filter", "before=busybox") == []
    assert names("--filter", "before=busybox_0_0") == ["busybox"]
    assert names("--filter", "before=busybox_0_1") == ["busybox_0_0", "busybox"]
    assert docker("images", "--filter", "before=fake_image", check=False).returncode == 1
    assert names("--filter", "since=busybox_1_2") == []
    assert names("--filter", "since=busybox_1_1") == ["busybox_1_2"]
    assert names("--filter", "since=busybox_1_0") == ["busybox_1_2", "busybox_1_1"]
    assert docker("images", "--filter", "since=fake_image", check=False).returncode == 1
    for node in NODES:
        mine = [f"busybox_{node[-1]}_{i}" for i in (2, 1, 0)]
        assert names("--filter", f"node={node}") == [*mine, "busybox"]
    assert set(made) | {"busybox"} <= set(names("-a"))
    assert names("--filter", "reference=busy*") == [*reversed(made), "busybox"]


def test_images_filter_label() -> None:
    """images.bats "docker images -f label" (the labelled image comes from a commit, not a
    build: build is a later issue)."""
    image_on(
        "node-0", "image-with-labels", "LABEL com.docker.swarm.test.integration.images=labeltest"
    )
    got = names("--filter", "label=com.docker.swarm.test.integration.images=labeltest")
    assert got == ["image-with-labels"]


def test_images_imagetag() -> None:
    """images.bats "docker images imagetag" (commit instead of build)."""
    image_on("node-1", "testimage:latest")
    assert names("testimage") == ["testimage"]


def test_images_after_commit_on_engine_side() -> None:
    """images.bats "docker images - after commit on engine side"."""
    docker("run", "-d", "--name", "test_container", "-e", "constraint:node==node-0", "busybox",
           "sleep", "500")  # fmt: skip
    docker("commit", "test_container", "testimage")
    assert "testimage" in names()


def test_history() -> None:
    """history.bats "docker history"."""
    assert "busybox" in names()
    assert "CREATED BY" in docker("history", "busybox").stdout.splitlines()[0]


# --- import.bats, load.bats, save.bats ------------------------------------------------------------


def export(ref: str, path: str) -> None:
    env = dict(os.environ, DOCKER_HOST=dc.docker_host())
    with open(path, "wb") as f:
        subprocess.run([DOCKER, "export", ref], stdout=f, env=env, check=True, timeout=60)


def cli_stdin(path: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, DOCKER_HOST=dc.docker_host())
    with open(path, "rb") as f:
        return subprocess.run([DOCKER, *args], stdin=f, capture_output=True, env=env, timeout=60)


def test_import(tmp_path: os.PathLike[str]) -> None:
    """import.bats "docker import": from stdin, onto every node."""
    docker("run", "-d", "--name", "test_container", "busybox", "sleep", "500")
    path = os.path.join(tmp_path, "export.tar")
    export("test_container", path)
    assert is_tar(path)
    assert cli_stdin(path, "import", "-", "testbusybox").returncode == 0
    for node in NODES:
        assert "testbusybox" in names("--filter", f"node={node}")


def test_import_check_error_code(tmp_path: os.PathLike[str]) -> None:
    """import.bats "docker import - check error code": not a tar, exit 1."""
    path = os.path.join(tmp_path, "abc")
    with open(path, "w") as f:
        f.write("abc\n")
    assert cli_stdin(path, "import", "-").returncode == 1


def test_load(tmp_path: os.PathLike[str]) -> None:
    """load.bats "docker load": onto every node of a cluster without images."""
    path = os.path.join(tmp_path, "busybox.tar")
    docker("save", "-o", path, "busybox:latest")
    docker("rmi", "busybox")
    assert docker("images", "-q").stdout == ""
    docker("load", "-i", path)
    assert docker("images", "-q").stdout.split()
    for node in NODES:
        assert names("--filter", f"node={node}") == ["busybox"]


def test_load_check_error_code(tmp_path: os.PathLike[str]) -> None:
    """load.bats "docker load - check error code": an empty file, exit 1."""
    path = os.path.join(tmp_path, "empty")
    open(path, "w").close()
    assert docker("load", "-i", path, check=False).returncode == 1


def test_save(tmp_path: os.PathLike[str]) -> None:
    """save.bats "docker save": to stdout and with -o, a tar either way."""
    assert "busybox" in names()
    to_stdout, to_file = os.path.join(tmp_path, "a.tar"), os.path.join(tmp_path, "b.tar")
    env = dict(os.environ, DOCKER_HOST=dc.docker_host())
    with open(to_stdout, "wb") as f:
        subprocess.run([DOCKER, "save", "busybox"], stdout=f, env=env, check=True, timeout=60)
    docker("save", "-o", to_file, "busybox")
    assert is_tar(to_stdout) and is_tar(to_file)


def test_save_multi_images(tmp_path: os.PathLike[str]) -> None:
    """save.bats "docker save multi-images": one node must hold every image asked for; what
    was saved loads back (Swarm loads it into a new engine; here after removing test1)."""
    image_on("node-0", "test1")
    image_on("node-1", "test2")
    assert {"busybox", "test1", "test2"} <= set(names())
    path = os.path.join(tmp_path, "multi.tar")
    res = docker("save", "-o", path, "busybox", "test1", "test2", check=False)
    assert res.returncode != 0
    assert "Unable to find a healthy engine containing all images" in res.stderr
    docker("save", "-o", path, "busybox", "test1")
    assert is_tar(path)
    docker("rmi", "test1")
    docker("load", "-i", path)
    assert {"busybox", "test1"} <= set(names())


# --- rmi.bats, tag.bats ---------------------------------------------------------------------------


def test_rmi() -> None:
    """rmi.bats "docker rmi": removed from every node."""
    assert "busybox" in names()
    docker("rmi", "busybox")
    assert docker("images", "-q").stdout == ""
    for node in NODES:
        assert names("--filter", f"node={node}") == []


def test_rmi_prefix() -> None:
    """rmi.bats "docker rmi prefix": a name prefix is no image."""
    res = docker("rmi", "bus", check=False)
    assert res.returncode != 0 and "No such image" in res.stderr


def test_rmi_without_tag() -> None:
    """rmi.bats "docker rmi without tag": `:latest` implied, only the tag goes."""
    docker("tag", "busybox:latest", "testimage:latest")
    assert {"busybox", "testimage"} <= set(names())
    assert "Untagged" in docker("rmi", "testimage").stdout
    assert "busybox" in names() and "testimage" not in names()


def test_rmi_force() -> None:
    """rmi.bats "docker rmi --force": by ID, every tag of it goes."""
    docker("tag", "busybox:latest", "testimage:latest")
    assert {"busybox", "testimage"} <= set(names())
    busybox_id = out("inspect", "--format={{.Id}}", "busybox:latest")[0]
    docker("rmi", "-f", busybox_id)
    assert names() == []


def test_rmi_via_id() -> None:
    """rmi.bats "docker rmi via id"."""
    (busybox_id,) = docker("images", "-q").stdout.split()
    docker("rmi", busybox_id)
    assert docker("images", "-q").stdout == ""


def test_rmi_force_with_image_tag() -> None:
    """rmi.bats "docker rmi --force with image tag": only that tag goes."""
    docker("tag", "busybox:latest", "testimage:tag1")
    docker("tag", "busybox:latest", "testimage:tag2")
    assert {"busybox:latest", "testimage:tag1", "testimage:tag2"} <= set(image_refs())
    docker("rmi", "-f", "testimage:tag1")
    refs = set(image_refs())
    assert {"busybox:latest", "testimage:tag2"} <= refs and "testimage:tag1" not in refs


def test_tag() -> None:
    """tag.bats "docker tag"."""
    assert "busybox" in names() and "tag_busybox" not in names()
    docker("tag", "busybox", "tag_busybox:test")
    assert names("tag_busybox") == ["tag_busybox"]


def test_tag_multi_nodes_with_same_image() -> None:
    """tag.bats "docker tag multi-nodes with same image": tagged once on each node."""
    docker("tag", "busybox", "tag_busybox:test")
    for node in NODES:
        assert names("--filter", f"node={node}").count("tag_busybox") == 1


# --- volume.bats ----------------------------------------------------------------------------------


def volumes(*args: str) -> list[str]:
    return docker("volume", "ls", "-q", *args).stdout.split()


def test_volume_ls() -> None:
    """volume.bats "docker volume ls": anonymous volumes, name and node filters."""
    assert volumes() == []
    docker("run", "-e", "constraint:node==node-0", "-d", "-v=/tmp", "busybox", "true")
    assert len(volumes()) == 1
    docker("run", "-e", "constraint:node==node-0", "-d", "-v=/tmp", "busybox", "true")
    assert len(volumes()) == 2
    docker("volume", "create", "--name=testsubstrvol")
    assert sorted(volumes("--filter", "name=substr")) == [f"{n}/testsubstrvol" for n in NODES]
    assert len(volumes("--filter", "node=node-0")) == 3
    assert volumes("--filter", "node=node-1") == ["node-1/testsubstrvol"]


def test_volume_inspect() -> None:
    """volume.bats "docker volume inspect": by `node/name`, as the node itself shows it."""
    docker("run", "-d", "-v=/tmp", "-e", "constraint:node==node-0", "busybox", "true")
    (name,) = volumes()
    assert name.startswith("node-0/")
    doc = json.loads(docker("volume", "inspect", name).stdout)[0]
    assert doc["Driver"] == "local"
    assert json.loads(docker("volume", "inspect", name.split("/", 1)[1]).stdout)[0] == doc


def test_volume_create() -> None:
    """volume.bats "docker volume create": on every node, or on the node named."""
    assert volumes() == []
    docker("volume", "create", "--name=test_volume")
    assert len(volumes()) == 2
    docker("run", "-d", "-v=/tmp", "busybox", "true")
    assert len(volumes()) == 3
    assert docker("volume", "create", "--name=node-2/test_volume2", check=False).returncode != 0
    docker("volume", "create", "--name=node-0/test_volume2")
    assert len(volumes()) == 4


def test_volume_rm() -> None:
    """volume.bats "docker volume rm": unknown or in use is refused."""
    assert docker("volume", "rm", "test_volume", check=False).returncode != 0
    docker("run", "-d", "--name=test_container", "-v=/tmp", "busybox", "true")
    docker("wait", "test_container")
    (volume,) = volumes()
    assert docker("volume", "rm", volume, check=False).returncode != 0
    docker("rm", "test_container")
    assert docker("volume", "rm", volume).stdout.splitlines() == [volume]
    assert volumes() == []


def test_volume_ls_filter_label() -> None:
    """volume.bats "docker volume ls --filter label"."""
    assert volumes() == []
    docker("volume", "create", "--name=testsubstrvol", "--label", "testlabel=foobar")
    assert len(volumes("--filter", "label=testlabel")) == 2
    assert len(volumes("--filter", "label=testlabel=foobar")) == 2
    assert volumes("--filter", "label=testlabel=notarealvalue") == []


def test_volume_create_with_whitelist() -> None:
    """volume.bats "docker volume create with whitelist" (Swarm's 3 nodes, here 2: the
    whitelist names node-1 only)."""
    docker("volume", "create", "--name=test_volume", "--label",
           'com.docker.swarm.whitelists=["node==node-1"]')  # fmt: skip
    assert volumes() == ["node-1/test_volume"]
