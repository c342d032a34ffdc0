"""Pushes from an ImageStore to a real registry (Debian's docker-registry, distribution 2.8) on
loopback, and logins against it: an image made locally is pushed and pulled back into another
store (same ID, same digest), a second push says `Layer already exists` without compressing,
another repository of the registry mounts the blobs, a pulled image pushed back reuses its
blobs; wrong or missing credentials (htpasswd Basic over TLS, token auth) give dockerd's errors
and leave the store as it was."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from proto.docker.errors import DockerError, InvalidParameter
from runtime import image_pull, image_push, image_views, layer_sources, registry_login
from runtime.images import ImageStore
from runtime.registry_auth import Credentials
from runtime.registry_client import RegistryClient, RegistryConfig, Transient
from tests import registry_kit as kit
from tests.tarballs import tar_of

pytestmark = pytest.mark.skipif(
    not os.path.exists(kit.REGISTRY_BIN), reason="docker-registry not installed (deploy/setup.sh)"
)


def make_image(store: ImageStore, tars: list[bytes], tag: str) -> str:
    """An image made on this node (never pulled): its layers stored uncompressed, tagged."""
    for tar in tars:

        def fill(path: str, data: bytes = tar) -> str:
            with open(path, "wb") as f:
                f.write(data)
            return hashlib.sha256(data).hexdigest()

        store.add_layer("test-", fill)
    config = kit.image_config(tars, ["sh"])
    from runtime.imageconfig import host_architecture

    config["architecture"] = host_architecture()
    image_id = store.add_image(json.dumps(config).encode(), "")
    store.set_tag(image_id, tag)
    return image_id


@pytest.fixture(scope="module")
def busybox_tar() -> bytes:
    return kit.busybox_layer()


@pytest.fixture
def store(tmp_path: Any) -> ImageStore:
    return ImageStore(str(tmp_path / "a"))


@pytest.fixture
def other(tmp_path: Any) -> ImageStore:
    return ImageStore(str(tmp_path / "b"))


@pytest.fixture
def reg() -> Iterator[kit.Registry]:
    with kit.registry() as r:
        yield r


def run_push(
    store: ImageStore,
    name: str,
    tag: str = "",
    config: RegistryConfig | None = None,
    creds: Credentials | None = None,
) -> tuple[list[image_push.PushResult], list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []
    results = asyncio.run(
        image_push.push(store, config or RegistryConfig(), name, tag, lines.append, creds)
    )
    return results, lines


def statuses(lines: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(m.get("id"), m["status"]) for m in lines if "status" in m]


def short(diff_id: str) -> str:
    return diff_id.removeprefix("sha256:")[:12]


def store_state(store: ImageStore) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """Every file under the store (its layer sources too), its tags and image records."""
    files = []
    for dirpath, _, filenames in os.walk(store.paths.images):
        files += [os.path.relpath(os.path.join(dirpath, n), store.paths.images) for n in filenames]
    return sorted(files), store.tags(), store.images()


def test_push_then_pull_elsewhere_then_again(
    store: ImageStore, other: ImageStore, reg: kit.Registry, busybox_tar: bytes
) -> None:
    extra = tar_of({"hello.txt": b"pushed from flotilla\n" * 1000})
    name = f"{reg.address}/test/app"
    image_id = make_image(store, [busybox_tar, extra], f"{name}:v1")
    diff_ids = store.diff_ids(image_id)
    (result,), lines = run_push(store, name, "v1")
    assert lines[0] == {"status": f"The push refers to repository [{name}]"}
    got = statuses(lines)
    top_first = [short(d) for d in reversed(diff_ids)]
    assert [s for s in got if s[1] == "Preparing"] == [(i, "Preparing") for i in top_first]
    for ident in top_first:
        assert (ident, "Pushed") in got
        assert got.index((ident, "Preparing")) < got.index((ident, "Pushed"))
    pushing = [m for m in lines if m.get("status") == "Pushing" and m["id"] == top_first[1]]
    assert pushing[-1]["progressDetail"] == {"current": len(busybox_tar), "total": len(busybox_tar)}
    assert got[-1] == (None, f"v1: digest: {result.digest} size: {result.size}")
    assert lines[-1] == {
        "progressDetail": {},
        "aux": {"Tag": "v1", "Digest": result.digest, "Size": result.size},
    }
    # The registry has that manifest, with the config and gzip layers in chain order.
    status, headers, body = reg.request(
        "GET", "/v2/test/app/manifests/v1", headers={"Accept": kit.MANIFEST_V2}
    )
    assert status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == result.digest
    manifest = json.loads(body)
    assert manifest["mediaType"] == kit.MANIFEST_V2
    assert manifest["config"]["digest"] == image_id
    assert [m["mediaType"] for m in manifest["layers"]] == [kit.LAYER_GZIP] * 2
    assert image_views.inspect(store, f"{name}:v1")["RepoDigests"] == [f"{name}@{result.digest}"]

    # Pulled back into another store: the same image, the same digest.
    pulled = asyncio.run(image_pull.pull(other, RegistryConfig(), f"{name}:v1", lambda _m: None))
    assert pulled.image_id == image_id
    assert other.diff_ids(image_id) == diff_ids
    assert image_views.inspect(other, f"{name}:v1")["RepoDigests"] == [f"{name}@{result.digest}"]
    with open(os.path.join(other.layer_dirs(image_id)[0], "hello.txt"), "rb") as f:
        assert f.read() == b"pushed from flotilla\n" * 1000

    # Again: every layer is known to be there; nothing is compressed or uploaded.
    (again,), lines = run_push(store, name, "v1")
    got = statuses(lines)
    assert sorted(s for s in got if s[1] == "Layer already exists") == sorted(
        (i, "Layer already exists") for i in top_first
    )
    assert not [s for s in got if s[1] in ("Pushing", "Pushed")]
    assert again.digest == result.digest

    # Another repository of the registry: the blobs are mounted, not uploaded.
    store.tag(f"{name}:v1", f"{reg.address}/test/copy", "v2")
    (copy,), lines = run_push(store, f"{reg.address}/test/copy", "v2")
    got = statuses(lines)
    assert sorted(s for s in got if s[1].startswith("Mounted")) == sorted(
        (i, "Mounted from test/app") for i in top_first
    )
    assert copy.digest == result.digest


def test_push_every_tag_and_a_pulled_image_back(
    store: ImageStore, reg: kit.Registry, busybox_tar: bytes
) -> None:
    pushed = kit.push_image(reg, "test/base", "1", [busybox_tar])
    name = f"{reg.address}/test/base"
    asyncio.run(image_pull.pull(store, RegistryConfig(), f"{name}:1", lambda _m: None))
    (diff_id,) = store.diff_ids(pushed.image_id)
    assert layer_sources.sources(store, diff_id) == [
        layer_sources.LayerSource(pushed.layer_digests[0], name)
    ]
    store.tag(f"{name}:1", name, "2")
    # No tag: every tag of the repository (docker push --all-tags), in order; the pulled
    # layer's blob is the registry's own (the kit's gzip, not ours): nothing is compressed.
    results, lines = run_push(store, name)
    assert [r.tag for r in results] == ["1", "2"]
    # The same blobs in the same (dockerd's) manifest layout: the very manifest pulled.
    assert results[0].digest == results[1].digest == pushed.digest
    got = statuses(lines)
    assert got.count((short(diff_id), "Layer already exists")) == 2
    assert not [s for s in got if s[1] in ("Pushing", "Pushed")]
    assert [s[1] for s in got if "digest:" in s[1]] == [
        f"{r.tag}: digest: {r.digest} size: {r.size}" for r in results
    ]


def test_many_layers_wait_and_a_failed_upload_starts_again(
    store: ImageStore, other: ImageStore, reg: kit.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """7 layers: 5 upload at once, the others say Waiting. The first PATCH breaks off half-way
    (as a dropped connection would): that layer's upload starts again from a new session and a
    fresh compression, and what the registry ends up with is the image."""
    tars = [tar_of({f"f{i}.bin": os.urandom(300_000)}) for i in range(7)]
    name = f"{reg.address}/test/many"
    image_id = make_image(store, tars, f"{name}:v1")
    real_send = RegistryClient.send
    broken: list[str] = []

    async def flaky_send(self: RegistryClient, method: str, url: Any, ok: Any, **kw: Any) -> Any:
        if method == "PATCH" and not broken:
            broken.append(str(url))
            async for _ in kw["data"]:
                break  # some bytes went out, then the connection was lost
            raise Transient(DockerError("connection reset by peer"))
        return await real_send(self, method, url, ok, **kw)

    monkeypatch.setattr(RegistryClient, "send", flaky_send)
    (result,), lines = run_push(store, name, "v1")
    got = statuses(lines)
    assert len(broken) == 1
    assert [s[1] for s in got].count("Pushed") == 7
    assert [s[1] for s in got].count("Waiting") == 2
    monkeypatch.undo()
    pulled = asyncio.run(image_pull.pull(other, RegistryConfig(), f"{name}:v1", lambda _m: None))
    assert pulled.image_id == image_id
    assert image_views.inspect(other, f"{name}:v1")["RepoDigests"] == [f"{name}@{result.digest}"]


def test_nothing_to_push(store: ImageStore, reg: kit.Registry, busybox_tar: bytes) -> None:
    name = f"{reg.address}/test/nope"
    with pytest.raises(DockerError) as err:
        run_push(store, name, "latest")
    assert err.value.message == f"An image does not exist locally with the tag: {name}"
    make_image(store, [busybox_tar], f"{name}:v1")
    with pytest.raises(DockerError) as err:
        run_push(store, name, "latest")
    assert err.value.message == f"tag does not exist: {name}:latest"
    with pytest.raises(InvalidParameter):
        run_push(store, name, "bad tag")


def test_basic_auth_over_tls(store: ImageStore, busybox_tar: bytes, tmp_path: Any) -> None:
    with kit.registry(tls=True, basic_auth=True) as reg:
        certs = tmp_path / "certs.d"
        (certs / reg.address).mkdir(parents=True)
        shutil.copy(reg.ca, certs / reg.address / "ca.crt")
        config = RegistryConfig(certs_dir=str(certs))
        name = f"{reg.address}/secret/app"
        image_id = make_image(store, [busybox_tar], f"{name}:v1")
        before = store_state(store)
        with pytest.raises(DockerError) as err:
            run_push(store, name, "v1", config)
        assert err.value.message == "no basic auth credentials"
        with pytest.raises(DockerError) as err:
            run_push(store, name, "v1", config, Credentials(kit.USER, "wrong"))
        assert err.value.message == "unauthorized: authentication required"
        assert store_state(store) == before
        (result,), _ = run_push(store, name, "v1", config, Credentials(kit.USER, kit.PASSWORD))
        assert store.repo_digests(image_id) == [f"{name}@{result.digest}"]

        # docker login against the same registry.
        def login(creds: Credentials) -> registry_login.LoginResult:
            return asyncio.run(registry_login.login(config, reg.address, creds))

        assert login(Credentials(kit.USER, kit.PASSWORD)) == registry_login.LoginResult(
            "Login Succeeded", ""
        )
        with pytest.raises(DockerError) as err:
            login(Credentials(kit.USER, "wrong"))
        assert (err.value.status, err.value.message) == (
            500,
            f"login attempt to https://{reg.address}/v2/ failed with status: 401 Unauthorized",
        )


def test_login_to_an_open_registry_and_an_unreachable_one(reg: kit.Registry) -> None:
    result = asyncio.run(
        registry_login.login(RegistryConfig(), f"http://{reg.address}/", Credentials("u", "p"))
    )
    assert result.status == "Login Succeeded"
    port = kit.free_port("127.0.0.1")
    with pytest.raises(DockerError) as err:
        asyncio.run(registry_login.login(RegistryConfig(), f"127.0.0.1:{port}", Credentials()))
    assert err.value.message == (
        f'Get "http://127.0.0.1:{port}/v2/": dial tcp 127.0.0.1:{port}: connect: connection refused'
    )
    assert registry_login.registry_domain("") == "docker.io"
    assert registry_login.registry_domain("https://index.docker.io/v1/") == "docker.io"
    with pytest.raises(InvalidParameter):
        registry_login.registry_domain("bad host/")


@contextlib.asynccontextmanager
async def token_registry() -> AsyncIterator[tuple[kit.Registry, kit.TokenIssuer]]:
    """A registry with token auth and its issuer, served inside the test's event loop."""
    port = kit.free_port("127.0.0.1")
    issuer = kit.TokenIssuer(f"http://127.0.0.1:{port}/token")
    runner = web.AppRunner(issuer.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        with kit.registry(issuer=issuer) as reg:
            yield reg, issuer
    finally:
        await runner.cleanup()


def test_token_auth(store: ImageStore, other: ImageStore, busybox_tar: bytes) -> None:
    async def go() -> None:
        async with token_registry() as (reg, issuer):
            name = f"{reg.address}/team/app"
            image_id = await asyncio.to_thread(make_image, store, [busybox_tar], f"{name}:v1")
            before = await asyncio.to_thread(store_state, store)
            config = RegistryConfig()
            for creds, expected in (
                (Credentials(kit.USER, "no"), "unauthorized: incorrect username or password"),
                (None, "denied: requested access to the resource is denied"),
            ):
                with pytest.raises(DockerError) as err:
                    await image_push.push(store, config, name, "v1", lambda _m: None, creds)
                assert err.value.message == expected
            assert await asyncio.to_thread(store_state, store) == before
            creds = Credentials(kit.USER, kit.PASSWORD)
            (result,) = await image_push.push(store, config, name, "v1", lambda _m: None, creds)
            assert "repository:team/app:push,pull" in issuer.scopes
            pulled = await image_pull.pull(other, config, f"{name}:v1", lambda _m: None, creds)
            assert pulled.image_id == image_id
            assert result.digest in str(store.repo_digests(image_id))

            # docker login: a token for no scope; wrong credentials are the 401 dockerd gives.
            issuer.scopes.clear()
            ok = await registry_login.login(config, reg.address, creds)
            assert ok.status == "Login Succeeded" and issuer.scopes == [""]
            with pytest.raises(DockerError) as err:
                await registry_login.login(config, reg.address, Credentials(kit.USER, "no"))
            assert (err.value.status, err.value.message) == (
                401,
                f'Get "http://{reg.address}/v2/": unauthorized: incorrect username or password',
            )

    asyncio.run(go())
