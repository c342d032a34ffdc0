"""`docker login` and `docker push` through the manager, end to end: a 2-node dev cluster, the real
docker CLI and docker-compose 1.29, and registries (Debian's docker-registry 2.8) started by the
tests on the dev host's underlay address (10.99.0.1) over TLS, the test CA in the agents'
certs.d. What is pushed is pulled back through the manager onto every node and compared."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from deploy import dev_layout
from deploy import devcluster as dc
from tests import registry_kit as kit
from tests.fixtures import dev_cluster, docker
from tests.manager.test_pull_e2e import images_on, store_state

NODES = ("node-0", "node-1")
HOST = dev_layout.HOST_IP
COMPOSE = shutil.which("docker-compose")

pytestmark = pytest.mark.skipif(
    not os.path.exists(kit.REGISTRY_BIN), reason="docker-registry not installed (deploy/setup.sh)"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, object]]:
    with dev_cluster(len(NODES), {}) as nodes:
        yield nodes


@pytest.fixture
def reg(cluster: dict[str, object]) -> Iterator[kit.Registry]:
    """An htpasswd registry over TLS the nodes trust; the CLI's logins are forgotten after."""
    with kit.registry(HOST, tls=True, basic_auth=True) as r, kit.trusted_by_dev_agents(r):
        try:
            yield r
        finally:
            config = os.path.join(os.environ["DOCKER_CONFIG"], "config.json")
            if os.path.exists(config):
                os.unlink(config)


def login(registry: str, password: str) -> subprocess.CompletedProcess[str]:
    return docker(
        "login", "-u", kit.USER, "--password-stdin", registry, stdin=password, check=False
    )


def manifest_digest(reg: kit.Registry, repo: str, tag: str) -> str:
    status, headers, _ = reg.request(
        "HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": kit.MANIFEST_V2}
    )
    assert status == 200, status
    return headers["Docker-Content-Digest"]


def test_login(reg: kit.Registry) -> None:
    res = login(reg.address, "wrong")
    assert res.returncode == 1
    assert res.stderr.strip().endswith(
        "Error response from daemon: login attempt to "
        f"https://{reg.address}/v2/ failed with status: 401 Unauthorized"
    ), res.stderr
    res = login(reg.address, kit.PASSWORD)
    assert res.returncode == 0, res.stderr
    assert "Login Succeeded" in res.stdout
    with open(os.path.join(os.environ["DOCKER_CONFIG"], "config.json")) as f:
        assert reg.address in json.load(f)["auths"]
    # A registry whose CA the nodes were not given: their TLS check refuses it.
    with kit.registry(HOST, tls=True) as untrusted:
        res = login(untrusted.address, kit.PASSWORD)
        assert res.returncode == 1
        assert res.stderr.strip().endswith(
            f'Error response from daemon: Get "https://{untrusted.address}/v2/": x509: '
            "certificate signed by unknown authority"
        ), res.stderr


def test_token_auth_login_and_push(cluster: dict[str, object]) -> None:
    """Token auth as Docker Hub does it, with the tests' token issuer: `docker login` gets a
    token for no scope, a push one for `push,pull`."""
    port = kit.free_port(HOST)
    issuer = kit.TokenIssuer(f"http://{HOST}:{port}/token")
    with (
        kit.served(issuer.app(), HOST, port),
        kit.registry(HOST, tls=True, issuer=issuer) as reg,
        kit.trusted_by_dev_agents(reg),
    ):
        name = f"{reg.address}/team/app:v1"
        try:
            res = login(reg.address, "wrong")
            assert res.returncode == 1
            assert res.stderr.strip().endswith(
                f'Error response from daemon: Get "https://{reg.address}/v2/": unauthorized: '
                "incorrect username or password"
            ), res.stderr
            res = login(reg.address, kit.PASSWORD)
            assert res.returncode == 0 and "Login Succeeded" in res.stdout, res.stderr
            docker("tag", "busybox", name)
            res = docker("push", name, timeout=120)
            assert "repository:team/app:push,pull" in issuer.scopes
            docker("rmi", name)
            docker("pull", name, timeout=120)
            digest = res.stdout.split("v1: digest: ")[1].split()[0]
            assert all(images_on(node)[name]["Digest"] == digest for node in NODES)
        finally:
            docker("rmi", "-f", name, check=False)
            config = os.path.join(os.environ["DOCKER_CONFIG"], "config.json")
            if os.path.exists(config):
                os.unlink(config)


def test_push_then_pull_back_on_every_node(reg: kit.Registry) -> None:
    name = f"{reg.address}/test/app"
    # An image on node-1 only (a container's change committed there): the manager must push
    # from the node that has it, not from the first node.
    docker("run", "--name", "push-src", "-e", "constraint:node==node-1", "busybox", "sh", "-c",
           "echo made on node-1 > /made")  # fmt: skip
    try:
        docker("commit", "push-src", f"{name}:v1")
    finally:
        docker("rm", "-f", "push-src", check=False)
    try:
        image_id = images_on("node-1")[f"{name}:v1"]["ID"]
        assert f"{name}:v1" not in images_on("node-0")
        res = docker("push", f"{name}:v1", check=False, timeout=120)
        assert res.returncode == 1
        assert "no basic auth credentials" in res.stderr, res.stderr
        assert login(reg.address, kit.PASSWORD).returncode == 0
        res = docker("push", f"{name}:v1", timeout=120)
        assert f"The push refers to repository [{name}]" in res.stdout
        assert res.stdout.count(": Pushed") == 2, res.stdout  # busybox and the commit
        digest = manifest_digest(reg, "test/app", "v1")
        assert f"v1: digest: {digest} size: " in res.stdout
        # Again: the registry has every layer.
        res = docker("push", f"{name}:v1", timeout=120)
        assert res.stdout.count(": Layer already exists") == 2, res.stdout
        assert "Pushed" not in res.stdout

        docker("rmi", f"{name}:v1")
        assert all(f"{name}:v1" not in images_on(node) for node in NODES)
        res = docker("pull", f"{name}:v1", timeout=120)
        for node in NODES:
            assert f"{node}: Pulling {name}:v1... : downloaded" in res.stdout, res.stdout
            row = images_on(node)[f"{name}:v1"]
            assert (row["ID"], row["Digest"]) == (image_id, digest)
        out = docker("run", "--rm", "-e", "constraint:node==node-0", f"{name}:v1", "cat", "/made")
        assert out.stdout == "made on node-1\n"
    finally:
        docker("rmi", "-f", f"{name}:v1", check=False)


def test_push_refusals(reg: kit.Registry) -> None:
    name = f"{reg.address}/test/refused"
    before = store_state()
    res = docker("push", name, check=False, timeout=60)
    assert res.returncode == 1
    assert "Using default tag: latest" in res.stdout
    assert f"The push refers to repository [{name}]" in res.stdout
    assert res.stderr.strip() == f"An image does not exist locally with the tag: {name}"
    docker("tag", "busybox", name)
    try:
        write_auth(reg.address, "wrong")
        res = docker("push", name, check=False, timeout=60)
        assert res.returncode == 1
        assert res.stderr.strip() == "unauthorized: authentication required", res.stderr
        assert store_state() == before  # the tag added no layer, the push wrote nothing
    finally:
        docker("rmi", name, check=False)


def write_auth(registry: str, password: str) -> None:
    """What a `docker login` leaves in the CLI's config (sent as X-Registry-Auth)."""
    import base64

    auth = base64.b64encode(f"{kit.USER}:{password}".encode()).decode()
    with open(os.path.join(os.environ["DOCKER_CONFIG"], "config.json"), "w") as f:
        json.dump({"auths": {registry: {"auth": auth}}}, f)


COMPOSE_FILE = """\
version: "3.8"
services:
  app:
    build: .
    image: {image}
    network_mode: bridge
    command: ["cat", "/hello"]
"""


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose not installed")
def test_compose_push_and_pull(reg: kit.Registry, tmp_path: object) -> None:
    image = f"{reg.address}/compose/app:v1"
    workdir = str(tmp_path)
    with open(os.path.join(workdir, "docker-compose.yml"), "w") as f:
        f.write(COMPOSE_FILE.format(image=image))
    with open(os.path.join(workdir, "Dockerfile"), "w") as f:
        f.write("FROM busybox\nRUN echo built by compose > /hello\n")
    assert login(reg.address, kit.PASSWORD).returncode == 0
    try:
        compose(workdir, "build")
        (built,) = [n for n in NODES if image in images_on(n)]
        image_id = images_on(built)[image]["ID"]
        res = compose(workdir, "push")
        digest = manifest_digest(reg, "compose/app", "v1")
        assert "Pushing app" in res.stderr, res.stderr
        docker("rmi", image)
        res = compose(workdir, "pull")
        for node in NODES:
            row = images_on(node)[image]
            assert (row["ID"], row["Digest"]) == (image_id, digest)
        other = next(n for n in NODES if n != built)
        out = docker("run", "--rm", "-e", f"constraint:node=={other}", image, "cat", "/hello")
        assert out.stdout == "built by compose\n"
    finally:
        compose(workdir, "down", "--rmi", "all", check=False)
        docker("rmi", "-f", image, check=False)


def compose(workdir: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DOCKER_HOST=dc.docker_host(), COMPOSE_INTERACTIVE_NO_CLI="1")
    res = subprocess.run(
        [str(COMPOSE), "-p", "fltpush", "--no-ansi", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"docker-compose {' '.join(args)}: rc={res.returncode}\n{res.stderr}")
    return res
