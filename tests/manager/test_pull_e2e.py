"""`docker pull` through the manager from a real registry (Debian's docker-registry 2.8), end to
end: a 2-node dev cluster, the real docker CLI, registries started by the tests on the dev host's
underlay address (10.99.0.1, which the nodes reach), over TLS with a test CA put in the agents'
certs.d (deploy/dev_layout.REGISTRY_CERTS). Every failure case checks dockerd's words and that no
node's store kept anything of it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from deploy import dev_layout
from tests import registry_kit as kit
from tests.fixtures import dev_cluster, docker

NODES = ("node-0", "node-1")
HOST = dev_layout.HOST_IP

pytestmark = pytest.mark.skipif(
    not os.path.exists(kit.REGISTRY_BIN), reason="docker-registry not installed (deploy/setup.sh)"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(len(NODES), {}) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def busybox_tar() -> bytes:
    return kit.busybox_layer()


@pytest.fixture
def reg(cluster: dict[str, object]) -> Iterator[kit.Registry]:
    with kit.registry(HOST, tls=True) as r, kit.trusted_by_dev_agents(r):
        yield r


def store_state() -> dict[str, tuple[list[str], list[str]]]:
    """Per node: the stored layers and what the store's temp dir holds."""
    out = {}
    for node in NODES:
        images = os.path.join(dev_layout.ROOT, node, "images")
        layers = sorted(os.listdir(os.path.join(images, "layers")))
        tmp = sorted(os.listdir(os.path.join(images, "tmp")))
        out[node] = (layers, tmp)
    return out


def images_on(node: str) -> dict[str, dict[str, str]]:
    out = docker(
        "images", "--digests", "--no-trunc", "--format", "{{json .}}", "--filter", f"node={node}"
    ).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {f"{r['Repository']}:{r['Tag']}": r for r in rows}


def remove_image(ref: str) -> None:
    docker("rmi", "-f", ref, check=False)


def test_pull_on_every_node_then_run(reg: kit.Registry, busybox_tar: bytes) -> None:
    pushed = kit.push_image(reg, "test/busybox", "latest", [busybox_tar])
    name = f"{reg.address}/test/busybox"
    try:
        res = docker("pull", name, timeout=120)
        for node in NODES:
            assert f"{node}: Pulling {name}:latest... : downloaded" in res.stdout, res.stdout
            assert f"{node}: Pulling {name}:latest... : Digest: {pushed.digest}" in res.stdout
            row = images_on(node)[f"{name}:latest"]
            assert row["ID"] == pushed.image_id
            assert row["Digest"] == pushed.digest
        view = json.loads(docker("image", "inspect", f"{name}:latest").stdout)[0]
        assert view["RepoDigests"] == [f"{name}@{pushed.digest}"]
        out = docker("run", "--rm", f"{name}:latest", "echo", "pulled and running").stdout
        assert out == "pulled and running\n"
        # Again: already there everywhere.
        res = docker("pull", name, timeout=60)
        assert f"Status: Image is up to date for {name}:latest" in res.stdout
        # By digest.
        res = docker("pull", f"{name}@{pushed.digest}", timeout=60)
        assert f"node-0: Pulling {name}@{pushed.digest}... : downloaded" in res.stdout
    finally:
        remove_image(f"{name}:latest")
    assert all(not tmp for _, tmp in store_state().values())


def test_run_pulls_a_missing_image(reg: kit.Registry, busybox_tar: bytes) -> None:
    pushed = kit.push_image(reg, "test/runme", "v1", [busybox_tar])
    ref = f"{reg.address}/test/runme:v1"
    try:
        res = docker("run", "--rm", ref, "echo", "from the registry", timeout=120)
        assert res.stdout == "from the registry\n"
        assert f"Unable to find image '{ref}' locally" in res.stderr
        for node in NODES:
            assert images_on(node)[ref]["ID"] == pushed.image_id
    finally:
        remove_image(ref)


def test_missing_manifest(reg: kit.Registry, busybox_tar: bytes) -> None:
    kit.push_image(reg, "test/busybox", "latest", [busybox_tar])
    before = store_state()
    ref = f"{reg.address}/test/busybox:nope"
    res = docker("pull", ref, check=False, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"Error response from daemon: manifest for {ref} not found: manifest unknown: "
        "manifest unknown"
    )
    assert store_state() == before


def test_unreachable_and_untrusted_registries(
    cluster: dict[str, object], busybox_tar: bytes
) -> None:
    before = store_state()
    port = kit.free_port(HOST)
    res = docker("pull", f"{HOST}:{port}/test/busybox", check=False, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f'Error response from daemon: Get "https://{HOST}:{port}/v2/": dial tcp {HOST}:{port}: '
        "connect: connection refused"
    )
    # A registry whose CA the nodes were not given.
    with kit.registry(HOST, tls=True) as reg:
        kit.push_image(reg, "test/busybox", "latest", [busybox_tar])
        res = docker("pull", f"{reg.address}/test/busybox", check=False, timeout=60)
        assert res.returncode == 1
        assert res.stderr.strip() == (
            f'Error response from daemon: Get "https://{reg.address}/v2/": x509: certificate '
            "signed by unknown authority"
        )
    assert store_state() == before


def test_basic_auth_over_tls(cluster: dict[str, object], busybox_tar: bytes) -> None:
    config_dir = os.environ["DOCKER_CONFIG"]
    with (
        kit.registry(HOST, tls=True, basic_auth=True) as reg,
        kit.trusted_by_dev_agents(reg),
    ):
        ref = f"{reg.address}/private/busybox:v1"
        try:
            pushed = kit.push_image(reg, "private/busybox", "v1", [busybox_tar])
            before = store_state()
            res = docker("pull", ref, check=False, timeout=60)
            assert res.returncode == 1
            assert res.stderr.strip() == (
                f'Error response from daemon: Head "https://{reg.address}/v2/private/busybox/'
                'manifests/v1": no basic auth credentials'
            )
            kit.write_auth(config_dir, reg.address, kit.USER, "wrong")
            res = docker("pull", ref, check=False, timeout=60)
            assert res.returncode == 1
            assert res.stderr.strip() == (
                "Error response from daemon: unauthorized: authentication required"
            )
            assert store_state() == before
            kit.write_auth(config_dir, reg.address, kit.USER, kit.PASSWORD)
            docker("pull", ref, timeout=120)
            for node in NODES:
                assert images_on(node)[ref]["ID"] == pushed.image_id
        finally:
            os.unlink(os.path.join(config_dir, "config.json"))
            remove_image(ref)


def raw_pull(ref: str, filters: dict[str, object]) -> tuple[int, list[dict[str, object]]]:
    """POST /images/create with `filters` (the CLI sends none): status and JSON lines."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from deploy import devcluster

    query = urllib.parse.urlencode({"fromImage": ref, "filters": json.dumps(filters)})
    url = f"http://{devcluster.MANAGER_ADDR}/v1.41/images/create?{query}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=120) as r:
            return r.status, [json.loads(line) for line in r.read().splitlines() if line.strip()]
    except urllib.error.HTTPError as e:
        return e.code, [json.loads(e.read())]


def test_pull_on_the_nodes_a_constraint_allows(reg: kit.Registry, busybox_tar: bytes) -> None:
    pushed = kit.push_image(reg, "test/onenode", "v1", [busybox_tar])
    ref = f"{reg.address}/test/onenode:v1"
    try:
        status, lines = raw_pull(ref, {"constraint": ["node==node-1"]})
        assert status == 200 and "error" not in lines[-1], lines
        assert {line["id"] for line in lines} == {"node-1"}
        assert lines[-1] == {"status": f"Pulling {ref}... : downloaded", "id": "node-1"}
        assert images_on("node-1")[ref]["ID"] == pushed.image_id
        assert ref not in images_on("node-0")
        # The scheduler's own refusal (Swarm's words, as for a volume), before any pull.
        status, lines = raw_pull(ref, {"constraint": ["node==node-9"]})
        message = (
            "Unable to find a node that satisfies the following conditions \n"
            "[available container slots]\n[node==node-9]"
        )
        assert (status, lines) == (500, [{"message": message}])
        assert raw_pull(ref, {"node": ["node-1"]}) == (400, [{"message": "Invalid filter 'node'"}])
    finally:
        remove_image(ref)


def test_a_100_mib_image_in_5_layers_onto_every_node(reg: kit.Registry, busybox_tar: bytes) -> None:
    """The generated multi-layer image of the issue: busybox and four layers of random bytes,
    ≈ 100 MiB in all, pushed to the registry and pulled through the manager onto every node;
    each node has it under the same ID and its containers read the layers' exact bytes."""
    import hashlib
    import io
    import tarfile

    layers = [busybox_tar, *kit.random_layers(100, 4)]
    pushed = kit.push_image(reg, "test/big", "v1", layers)
    ref = f"{reg.address}/test/big:v1"
    expected = {}
    for tar_bytes in layers[1:]:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            member = tar.getmembers()[0]
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            expected[member.name] = hashlib.sha256(data).hexdigest()
    try:
        res = docker("pull", ref, timeout=600)
        for node in NODES:
            assert f"{node}: Pulling {ref}... : downloaded" in res.stdout, res.stdout
            assert images_on(node)[ref]["ID"] == pushed.image_id
            paths = " ".join(f"/{name}" for name in sorted(expected))
            out = docker(
                "run", "--rm", "-e", f"constraint:node=={node}", ref,
                "sha256sum", *paths.split(),
            ).stdout  # fmt: skip
            got = {line.split()[1].lstrip("/"): line.split()[0] for line in out.splitlines()}
            assert got == expected
    finally:
        remove_image(ref)
    assert all(not tmp for _, tmp in store_state().values())
