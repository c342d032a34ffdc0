"""Pulls into an ImageStore from a real registry (Debian's docker-registry, distribution 2.8)
started by the test on loopback: progress, shared layers, digests, auth over TLS, and the
failures (missing manifest, wrong password, tampered blob, unreachable registry) in dockerd's
words, each leaving the store as it was."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from proto.docker.errors import DockerError, NotFound
from runtime import image_pull, image_views
from runtime.images import ImageStore
from runtime.registry_auth import Credentials
from runtime.registry_client import RegistryConfig
from tests import registry_kit as kit
from tests.tarballs import tar_of

pytestmark = pytest.mark.skipif(
    not os.path.exists(kit.REGISTRY_BIN), reason="docker-registry not installed (deploy/setup.sh)"
)


@pytest.fixture(scope="module")
def busybox_tar() -> bytes:
    return kit.busybox_layer()


@pytest.fixture
def store(tmp_path: Any) -> ImageStore:
    return ImageStore(str(tmp_path / "root"))


@pytest.fixture
def reg() -> Iterator[kit.Registry]:
    with kit.registry() as r:
        yield r


def run_pull(
    store: ImageStore,
    ref: str,
    config: RegistryConfig | None = None,
    creds: Credentials | None = None,
) -> tuple[image_pull.PullResult, list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []
    result = asyncio.run(
        image_pull.pull(store, config or RegistryConfig(), ref, lines.append, creds)
    )
    return result, lines


def store_files(store: ImageStore) -> list[str]:
    """Every file under the store's images dir except its index files (what a pull adds)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(store.paths.images):
        for name in filenames + [d for d in dirnames if dirpath.endswith("tmp")]:
            out.append(os.path.relpath(os.path.join(dirpath, name), store.paths.images))
    return sorted(out)


def test_pull_progress_tags_and_digests(
    store: ImageStore, reg: kit.Registry, busybox_tar: bytes
) -> None:
    pushed = kit.push_image(reg, "test/busybox", "latest", [busybox_tar])
    name = f"{reg.address}/test/busybox"
    result, lines = run_pull(store, name)
    assert result.image_id == pushed.image_id
    assert result.reference == f"{name}:latest" and result.updated
    short = pushed.layer_digests[0].removeprefix("sha256:")[:12]
    statuses = [(m.get("id"), m["status"]) for m in lines]
    assert statuses[0] == ("latest", "Pulling from test/busybox")
    for step in ("Pulling fs layer", "Verifying Checksum", "Download complete", "Pull complete"):
        assert (short, step) in statuses
    downloading = [m for m in lines if m["status"] == "Downloading"]
    assert (
        downloading
        and downloading[-1]["progressDetail"]["current"]
        == downloading[-1]["progressDetail"]["total"]
    )
    assert statuses[-2:] == [
        (None, f"Digest: {pushed.digest}"),
        (None, f"Status: Downloaded newer image for {name}:latest"),
    ]
    view = image_views.inspect(store, f"{name}:latest")
    assert view["Id"] == pushed.image_id
    assert view["RepoTags"] == [f"{name}:latest"]
    assert view["RepoDigests"] == [f"{name}@{pushed.digest}"]
    assert view["RootFS"]["Layers"] == pushed.config["rootfs"]["diff_ids"]  # type: ignore[index]
    # The layer is unpacked: busybox's sh is there.
    (top,) = store.layer_dirs(pushed.image_id)
    assert os.path.islink(os.path.join(top, "bin", "sh")) or os.path.exists(
        os.path.join(top, "bin", "sh")
    )
    assert store.resolve(f"{name}@{pushed.digest}") == pushed.image_id

    # Again: nothing is fetched, the tag already names it.
    again, lines = run_pull(store, name)
    assert not again.updated
    assert [m["status"] for m in lines] == [
        "Pulling from test/busybox",
        f"Digest: {pushed.digest}",
        f"Status: Image is up to date for {name}:latest",
    ]


def test_shared_layer_and_pull_by_digest(
    store: ImageStore, reg: kit.Registry, busybox_tar: bytes
) -> None:
    kit.push_image(reg, "test/base", "1", [busybox_tar])
    extra = tar_of({"hello.txt": b"hello from a second layer\n"})
    pushed = kit.push_image(reg, "test/app", "1", [busybox_tar, extra])
    run_pull(store, f"{reg.address}/test/base:1")
    ref = f"{reg.address}/test/app@{pushed.digest}"
    result, lines = run_pull(store, ref)
    assert result.image_id == pushed.image_id and result.reference == ref
    base_short = pushed.layer_digests[0].removeprefix("sha256:")[:12]
    extra_short = pushed.layer_digests[1].removeprefix("sha256:")[:12]
    statuses = [(m.get("id"), m["status"]) for m in lines]
    assert statuses[0] == (pushed.digest, "Pulling from test/app")
    assert (base_short, "Already exists") in statuses
    assert (base_short, "Pulling fs layer") not in statuses
    assert (extra_short, "Pull complete") in statuses
    assert statuses[-1] == (None, f"Status: Downloaded newer image for {ref}")
    assert store.tags_of(pushed.image_id) == []
    assert store.repo_digests(pushed.image_id) == [ref]
    assert store.resolve(ref) == pushed.image_id
    # rmi by digest removes the image it alone names.
    records = store.remove(ref)
    assert {"Untagged": ref} in records and {"Deleted": pushed.image_id} in records


def test_missing_manifest(store: ImageStore, reg: kit.Registry, busybox_tar: bytes) -> None:
    kit.push_image(reg, "test/busybox", "latest", [busybox_tar])
    before = store_files(store)
    with pytest.raises(NotFound) as err:
        run_pull(store, f"{reg.address}/test/busybox:nope")
    assert err.value.message == (
        f"manifest for {reg.address}/test/busybox:nope not found: manifest unknown: "
        "manifest unknown"
    )
    assert store_files(store) == before


def test_unreachable_registry(store: ImageStore) -> None:
    port = kit.free_port("127.0.0.1")
    with pytest.raises(DockerError) as err:
        run_pull(store, f"127.0.0.1:{port}/test/busybox")
    # Loopback is insecure: HTTPS first, then plain HTTP, whose failure is the one reported.
    assert err.value.message == (
        f'Get "http://127.0.0.1:{port}/v2/": dial tcp 127.0.0.1:{port}: connect: connection refused'
    )
    with pytest.raises(DockerError) as err:
        run_pull(store, "flt-no-such-host.invalid/test/busybox")
    assert err.value.message == (
        'Get "https://flt-no-such-host.invalid/v2/": dial tcp: lookup '
        "flt-no-such-host.invalid: no such host"
    )
    assert store.images() == {}


def test_basic_auth_over_tls(store: ImageStore, busybox_tar: bytes, tmp_path: Any) -> None:
    with kit.registry(tls=True, basic_auth=True) as reg:
        pushed = kit.push_image(reg, "secret/busybox", "v1", [busybox_tar])
        certs = tmp_path / "certs.d"
        (certs / reg.address).mkdir(parents=True)
        shutil.copy(reg.ca, certs / reg.address / "ca.crt")
        config = RegistryConfig(certs_dir=str(certs))
        name = f"{reg.address}/secret/busybox:v1"
        url = f"https://{reg.address}/v2/secret/busybox/manifests/v1"
        with pytest.raises(DockerError) as err:
            run_pull(store, name, config)
        assert err.value.message == f'Head "{url}": no basic auth credentials'
        with pytest.raises(DockerError) as err:
            run_pull(store, name, config, Credentials(kit.USER, "wrong"))
        assert err.value.message == "unauthorized: authentication required"
        assert store.images() == {}
        result, _ = run_pull(store, name, config, Credentials(kit.USER, kit.PASSWORD))
        assert result.image_id == pushed.image_id


# --------------------------------------------------------------------------- tampered blobs


class FakeRegistry:
    """A registry serving one image whose layer blob is not what its digest says."""

    def __init__(self, layer: bytes) -> None:
        import gzip

        good = gzip.compress(layer, mtime=0)
        self.layer_digest = "sha256:" + hashlib.sha256(good).hexdigest()
        config = json.dumps(kit.image_config([layer], ["sh"])).encode()
        self.config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        self.blobs = {self.layer_digest: good[:-8] + b"tampered", self.config_digest: config}
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": kit.MANIFEST_V2,
                "config": {
                    "mediaType": kit.CONFIG_V1,
                    "size": len(config),
                    "digest": self.config_digest,
                },
                "layers": [
                    {"mediaType": kit.LAYER_GZIP, "size": len(good), "digest": self.layer_digest}
                ],
            }
        ).encode()

    def app(self) -> web.Application:
        async def ping(_: web.Request) -> web.Response:
            return web.json_response({})

        async def manifest(_: web.Request) -> web.Response:
            return web.Response(body=self.manifest, content_type=kit.MANIFEST_V2)

        async def blob(request: web.Request) -> web.Response:
            return web.Response(body=self.blobs[request.match_info["digest"]])

        app = web.Application()
        app.router.add_get("/v2/", ping)
        app.router.add_get("/v2/test/bad/manifests/{ref}", manifest)
        app.router.add_get("/v2/test/bad/blobs/{digest}", blob)
        return app


def test_tampered_layer_leaves_nothing(store: ImageStore) -> None:
    fake = FakeRegistry(tar_of({"a.txt": b"some content " * 1000}))

    async def go() -> list[dict[str, Any]]:
        runner = web.AppRunner(fake.app())
        await runner.setup()
        port = kit.free_port("127.0.0.1")
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        lines: list[dict[str, Any]] = []
        try:
            await image_pull.pull(
                store, RegistryConfig(), f"127.0.0.1:{port}/test/bad", lines.append
            )
        finally:
            await runner.cleanup()
        return lines

    before = store_files(store)
    with pytest.raises(DockerError) as err:
        asyncio.run(go())
    assert err.value.message == (
        f"filesystem layer verification failed for digest {fake.layer_digest}"
    )
    assert store_files(store) == before
    assert store.images() == {} and store.tags() == {}


# --------------------------------------------------------------------------- pieces


def test_insecure_registries_as_dockerd_decides() -> None:
    config = RegistryConfig(insecure=("10.99.0.0/24", "myregistry:5000"))
    assert config.is_insecure("10.99.0.1:5000")
    assert config.is_insecure("myregistry:5000")
    assert config.is_insecure("127.0.0.1:5000")  # loopback always is
    assert config.is_insecure("localhost:5000")
    assert not config.is_insecure("10.98.0.1:5000")
    assert not config.is_insecure("docker.io")
    assert not RegistryConfig().is_insecure("10.99.0.1:5000")


def test_challenges_and_auth_config() -> None:
    from runtime.registry_auth import parse_challenges

    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert parse_challenges(header) == [
        (
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/busybox:pull",
            },
        )
    ]
    assert parse_challenges('Basic realm="r"') == [("basic", {"realm": "r"})]
    creds = Credentials.from_auth_config({"auth": "dXNlcjpwYTpzcw=="})  # user:pa:ss
    assert (creds.username, creds.password) == ("user", "pa:ss")


def test_progress_bar_as_go_draws_it() -> None:
    from runtime.pull_progress import human_size, progress_bar

    assert human_size(1_234_567) == "1.235MB" and human_size(999) == "999B"
    assert progress_bar(500_000, 1_000_000) == "[" + "=" * 25 + ">" + " " * 25 + "]    500kB/1MB"


def test_bearer_token_flow(store: ImageStore, busybox_tar: bytes) -> None:
    """Token auth as Docker Hub does it: the registry's challenge names a realm; the client
    gets a token for `repository:<path>:pull` there, with the credentials as Basic auth."""

    async def go() -> None:
        port = kit.free_port("127.0.0.1")
        issuer = kit.TokenIssuer(f"http://127.0.0.1:{port}/token")
        runner = web.AppRunner(issuer.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            with kit.registry(issuer=issuer) as reg:
                pushed = await asyncio.to_thread(
                    kit.push_image, reg, "team/busybox", "v1", [busybox_tar]
                )
                name = f"{reg.address}/team/busybox:v1"
                url = f"http://{reg.address}/v2/team/busybox/manifests/v1"
                with pytest.raises(DockerError) as err:
                    await image_pull.pull(
                        store, RegistryConfig(), name, lambda _m: None, Credentials(kit.USER, "no")
                    )
                assert err.value.message == (
                    f'Head "{url}": unauthorized: incorrect username or password'
                )
                # Anonymous: the issuer grants nothing, the registry refuses.
                with pytest.raises(DockerError) as err:
                    await image_pull.pull(store, RegistryConfig(), name, lambda _m: None)
                # The registry's insufficient_scope challenge: dockerd's "pull access denied".
                assert (err.value.status, err.value.message) == (
                    404,
                    f"pull access denied for {reg.address}/team/busybox, repository does not "
                    "exist or may require 'docker login': denied: requested access to the "
                    "resource is denied",
                )
                assert store.images() == {}
                creds = Credentials(kit.USER, kit.PASSWORD)
                result = await image_pull.pull(
                    store, RegistryConfig(), name, lambda _m: None, creds
                )
                assert result.image_id == pushed.image_id
                assert "repository:team/busybox:pull" in issuer.scopes
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_oci_image_with_zstd_layers(
    store: ImageStore, reg: kit.Registry, busybox_tar: bytes
) -> None:
    """An OCI manifest whose layers are tar+zstd (containerd's and BuildKit's option): pulled,
    checked against the config's diff IDs and unpacked like a gzip one."""
    extra = tar_of({"etc/zstd-marker": b"compressed with zstd\n"})
    pushed = kit.push_image(reg, "test/zstd", "v1", [busybox_tar, extra], zstd=True)
    result, _ = run_pull(store, f"{reg.address}/test/zstd:v1")
    assert result.image_id == pushed.image_id
    view = image_views.inspect(store, f"{reg.address}/test/zstd:v1")
    assert view["RootFS"]["Layers"] == pushed.config["rootfs"]["diff_ids"]  # type: ignore[index]
    top = store.layer_dirs(pushed.image_id)[0]
    with open(os.path.join(top, "etc", "zstd-marker"), "rb") as f:
        assert f.read() == b"compressed with zstd\n"
