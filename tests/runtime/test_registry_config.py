"""A node's registry settings beyond one registry: the credentials a build picks from its
X-Registry-Config (dockerd's ResolveAuthConfig), and Docker Hub mirrors (`--registry-mirror`)
tried before the hub, with real registries (tests/registry_kit.py) as mirror and as hub."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from proto.docker.errors import DockerError
from runtime import image_pull, registry_client
from runtime.images import ImageStore
from runtime.registry_auth import INDEX_SERVER, Credentials, resolve_auth_config
from runtime.registry_client import HUB_ENDPOINT, Endpoint, RegistryConfig, validate_mirror
from tests import registry_kit as kit
from tests.tarballs import tar_of

needs_registry = pytest.mark.skipif(
    not os.path.exists(kit.REGISTRY_BIN), reason="docker-registry not installed (deploy/setup.sh)"
)


def test_build_credentials_picked_by_registry() -> None:
    hub = {"username": "hubuser", "password": "hubpw"}
    configs = {
        INDEX_SERVER: hub,
        "10.99.0.1:5000": {"auth": "dXNlcjpwdw=="},  # user:pw
        "https://legacy.example:443/v1/": {"username": "old", "password": "o"},
        "docker.io": {"username": "not-hub-key", "password": "x"},
        "broken.example": "not an object",
    }
    assert resolve_auth_config(configs, "docker.io") == Credentials("hubuser", "hubpw")
    assert resolve_auth_config(configs, "10.99.0.1:5000") == Credentials("user", "pw")
    # A legacy key (scheme and path) matches by its host.
    assert resolve_auth_config(configs, "legacy.example:443") == Credentials("old", "o")
    # Docker Hub only under its index key; nothing else matches anything else.
    assert resolve_auth_config({"docker.io": hub}, "docker.io") == Credentials()
    assert resolve_auth_config(configs, "other.example") == Credentials()
    assert resolve_auth_config(configs, "broken.example") == Credentials()


# --------------------------------------------------------------------------- mirrors


def test_mirror_urls_as_dockerd_validates_them() -> None:
    assert validate_mirror("https://mirror.example:5000") == "https://mirror.example:5000/"
    assert validate_mirror("http://10.0.0.1/") == "http://10.0.0.1/"
    refusals = {
        "mirror.example": 'invalid mirror: unsupported scheme "" in "mirror.example"',
        "ftp://m": 'invalid mirror: unsupported scheme "ftp" in "ftp://m"',
        "https://m/v2/": 'invalid mirror: path, query, or fragment at end of the URI "https://m/v2/"',
        "https://m?x=1": 'invalid mirror: path, query, or fragment at end of the URI "https://m?x=1"',
        "https://u:secret@m": (
            'invalid mirror: username/password not allowed in URI "https://u:xxxxx@m"'
        ),
        "https://m:port": 'invalid mirror: "https://m:port" is not a valid URI',
    }
    for value, message in refusals.items():
        with pytest.raises(ValueError) as err:
            validate_mirror(value)
        assert str(err.value) == message


def test_mirrors_are_for_docker_hub_only() -> None:
    config = RegistryConfig(mirrors=("http://10.0.0.1:5000/", "https://m.example/"))
    assert config.endpoints("docker.io") == [
        Endpoint("10.0.0.1:5000", "http", mirror=True),
        Endpoint("m.example", "https", mirror=True),
        Endpoint(HUB_ENDPOINT),
    ]
    assert config.endpoints("10.0.0.1:5000") == [Endpoint("10.0.0.1:5000")]
    assert RegistryConfig().endpoints("docker.io") == [Endpoint(HUB_ENDPOINT)]


def _pull(store: ImageStore, config: RegistryConfig, ref: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    asyncio.run(image_pull.pull(store, config, ref, lines.append))
    return lines


@pytest.fixture
def mirror() -> Iterator[kit.Registry]:
    """A real registry standing in for a Docker Hub mirror (plain HTTP on loopback)."""
    with kit.registry() as reg:
        yield reg


@needs_registry
def test_hub_image_served_by_the_mirror(tmp_path: Any, mirror: kit.Registry) -> None:
    """`busybox` is docker.io/library/busybox: the mirror has it, so Docker Hub (unreachable
    here) is never asked."""
    pushed = kit.push_image(mirror, "library/busybox", "latest", [kit.busybox_layer()])
    store = ImageStore(str(tmp_path / "root"))
    config = RegistryConfig(mirrors=(validate_mirror(mirror.url),))
    lines = _pull(store, config, "busybox")
    assert lines[0] == {"status": "Pulling from library/busybox", "id": "latest"}
    assert lines[-1] == {"status": "Status: Downloaded newer image for busybox:latest"}
    assert store.resolve("busybox:latest") == pushed.image_id
    assert store.repo_digests(pushed.image_id) == [f"busybox@{pushed.digest}"]
    # Not a Docker Hub image: the mirror is not asked for it.
    with pytest.raises(DockerError) as err:
        _pull(store, config, "flt-no-such-host.invalid/library/busybox")
    assert "lookup flt-no-such-host.invalid: no such host" in err.value.message


@pytest.fixture
def hub(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[kit.Registry, str]]:
    """A real registry in Docker Hub's place (TLS, its CA in certs.d/docker.io as a node would
    trust the hub's): returns it and the certs dir."""
    with kit.registry(tls=True) as reg:
        certs = tmp_path / "certs.d"
        (certs / "docker.io").mkdir(parents=True)
        shutil.copy(reg.ca, certs / "docker.io" / "ca.crt")
        monkeypatch.setattr(registry_client, "HUB_ENDPOINT", reg.address)
        yield reg, str(certs)


@needs_registry
def test_failing_mirrors_fall_back_to_the_hub(
    tmp_path: Any, mirror: kit.Registry, hub: tuple[kit.Registry, str]
) -> None:
    hub_reg, certs = hub
    from_hub = kit.push_image(hub_reg, "library/app", "v1", [tar_of({"hub": b"from the hub"})])
    kit.push_image(mirror, "library/app", "v2", [tar_of({"m": b"from the mirror"})])
    down = f"http://127.0.0.1:{kit.free_port('127.0.0.1')}"
    mirrors = (validate_mirror(down), validate_mirror(mirror.url))
    config = RegistryConfig(certs_dir=certs, mirrors=mirrors)
    store = ImageStore(str(tmp_path / "root"))
    # The first mirror refuses connections, the second lacks the tag: the hub serves it.
    _pull(store, config, "app:v1")
    assert store.resolve("app:v1") == from_hub.image_id
    # Everyone lacks it: the hub's error, in dockerd's words; nothing stays.
    with pytest.raises(DockerError) as err:
        _pull(store, config, "app:v3")
    assert err.value.message == (
        "manifest for app:v3 not found: manifest unknown: manifest unknown"
    )
    assert store.images().keys() == {from_hub.image_id}
