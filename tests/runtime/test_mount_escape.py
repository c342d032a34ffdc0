"""Attacks through the image's own names: symlinked mount targets and VOLUME paths, copy-up that
follows links onto the host, and a setuid binary in a layer reached through the data root.

Each builds a crafted image (a `docker import` of busybox with extra entries), runs real
containers and checks the host from outside.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from proto.docker.errors import DockerError
from runtime import container_mounts, image_transfer
from runtime.containers import Runtime
from tests.attack_kit import as_nobody, crafted_rootfs, host_tree, relative_to_host
from tests.fixtures import SUBNET, runtime_for_tests


@pytest.fixture
async def rt(busybox_tar: str) -> AsyncIterator[Runtime]:
    async with runtime_for_tests(busybox_tar) as runtime:
        yield runtime


@pytest.fixture
def host_dir() -> Iterator[str]:
    """A host directory an image points its symlinks at; it must stay as the test made it."""
    path = tempfile.mkdtemp(prefix="flt-escape-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _crafted_image(
    rt: Runtime,
    busybox_tar: str,
    reference: str,
    links: dict[str, str],
    changes: list[str],
    dirs: tuple[str, ...] = (),
    files: dict[str, tuple[bytes, int]] | None = None,
    drop: tuple[str, ...] = (),
) -> str:
    rootfs = crafted_rootfs(busybox_tar, links, dirs, files, drop)
    return image_transfer.import_tarball(rt.images, io.BytesIO(rootfs), reference, changes)


async def _run(
    rt: Runtime, body: dict[str, object], without_init_layer: bool = False
) -> tuple[int, str, list[dict[str, object]]]:
    """Run to the end; returns the exit code (-1: the start failed), stdout+stderr (or the
    start's error) and the mounts (the container is kept). `without_init_layer`: as a bundle
    made before the init layer existed, whose /etc binds land in the image's own /etc."""
    rec = await rt.create(body)
    if without_init_layer:
        shutil.rmtree(os.path.join(rt.paths.container(rec.id), "init"))
    try:
        await rt.start(rec.id)
    except DockerError as e:
        return -1, str(e), container_mounts.mounts(rt, rt.get(rec.id))
    code = (await rt.wait(rec.id))["StatusCode"]
    out = b"".join([e.data async for e in rt.logs(rec.id)]).decode()
    return code, out, container_mounts.mounts(rt, rt.get(rec.id))


async def test_symlinked_etc_volume_bind_and_tmpfs_targets_stay_in_the_root(
    rt: Runtime, busybox_tar: str, host_dir: str
) -> None:
    bind_src = tempfile.mkdtemp(prefix="flt-bindsrc-")
    try:
        image = _crafted_image(
            rt,
            busybox_tar,
            "escape:targets",
            # Each target goes through a link to the host directory: a string join would
            # create the last component there (and mount on it).
            links={
                "etc": host_dir,  # the /etc binds: hosts, hostname, resolv.conf
                "data": host_dir,  # absolute
                "rel": relative_to_host(host_dir),  # relative, climbs out of the rootfs
                "bnd": host_dir,
                "scratch": relative_to_host(host_dir),
            },
            changes=["VOLUME /data/vol", "VOLUME /rel/rvol"],
            drop=("etc",),
        )
        script = (
            "echo abs > /data/vol/f && echo rel > /rel/rvol/f && cat /etc/hostname"
            " && ls /bnd/in && stat -f -c %T /scratch/t && echo done"
        )
        code, out, mounts = await _run(
            rt,
            {
                "Image": image,
                "Cmd": ["sh", "-c", script],
                "Hostname": "inside",
                "HostConfig": {"Binds": [f"{bind_src}:/bnd/in"], "Tmpfs": {"/scratch/t": ""}},
            },
            without_init_layer=True,
        )
        # Nothing on the host: the image's links resolved inside its root, as runc's
        # securejoin does, and the container ran with its mounts there.
        assert host_tree(host_dir) == []
        assert os.listdir(bind_src) == []
        assert (code, out) == (0, "inside\ntmpfs\ndone\n"), out
        by_dest = {m["Destination"]: m["Source"] for m in mounts}
        with open(os.path.join(by_dest["/data/vol"], "f")) as f:
            assert f.read() == "abs\n"
        with open(os.path.join(by_dest["/rel/rvol"], "f")) as f:
            assert f.read() == "rel\n"
    finally:
        shutil.rmtree(bind_src, ignore_errors=True)


async def test_symlinked_proc_is_refused(rt: Runtime, busybox_tar: str, host_dir: str) -> None:
    image = _crafted_image(
        rt,
        busybox_tar,
        "escape:proc",
        links={"proc": f"{host_dir}/proc", "sys": f"{host_dir}/sys"},
        changes=[],
        drop=("proc", "sys"),
    )
    rec = await rt.create({"Image": image, "Cmd": ["true"]})
    with pytest.raises(DockerError) as e:
        await rt.start(rec.id)
    assert 'filesystem "proc" must be mounted on ordinary directory' in str(e.value)
    assert host_tree(host_dir) == []


async def test_copy_up_never_reads_the_host(rt: Runtime, busybox_tar: str, host_dir: str) -> None:
    secret = os.path.join(host_dir, "secret")
    os.makedirs(os.path.join(secret, "sub"))
    with open(os.path.join(secret, "sub", "key"), "w") as f:
        f.write("host secret\n")
    before = host_tree(host_dir)
    image = _crafted_image(
        rt,
        busybox_tar,
        "escape:copyup",
        links={
            "vol": secret,  # VOLUME /vol/sub: the host's secret/sub on a string join
            "rvol": relative_to_host(secret),
            "app/link": secret,  # inside a copied dir: copied as the link it is
            "inlink": "opt/app",  # a link within the image: copied up through, like dockerd
        },
        dirs=("app", "opt", "opt/app"),
        files={"app/file": (b"image\n", 0o644), "opt/app/file": (b"opt\n", 0o644)},
        changes=["VOLUME /vol/sub", "VOLUME /rvol/sub", "VOLUME /app", "VOLUME /inlink"],
    )
    code, out, mounts = await _run(
        rt, {"Image": image, "Cmd": ["sh", "-c", "ls -A /vol/sub /rvol/sub; cat /inlink/file"]}
    )
    by_dest = {m["Destination"]: m["Source"] for m in mounts}
    assert os.listdir(by_dest["/vol/sub"]) == [] and os.listdir(by_dest["/rvol/sub"]) == []
    assert code == 0, out
    assert "key" not in out and out.endswith("opt\n")
    app = by_dest["/app"]
    assert os.path.islink(os.path.join(app, "link"))
    assert os.readlink(os.path.join(app, "link")) == secret
    assert sorted(os.listdir(app)) == ["file", "link"]
    assert os.listdir(by_dest["/inlink"]) == ["file"]
    assert host_tree(host_dir) == before


async def test_data_root_modes_keep_host_users_out(rt: Runtime, busybox_tar: str) -> None:
    with tarfile.open(busybox_tar) as src:
        member = src.getmember(next(n for n in src.getnames() if n.endswith("bin/busybox")))
        busybox = src.extractfile(member).read()  # type: ignore[union-attr]
    image = _crafted_image(
        rt,
        busybox_tar,
        "escape:setuid",
        links={},
        changes=[],
        files={"suid/busybox": (busybox, 0o4755)},
    )
    rec = await rt.create({"Image": image, "Cmd": ["true"], "Env": ["TOKEN=secret"]})
    layer = rt.images.layer_dirs(image)[0]
    suid = os.path.join(layer, "suid", "busybox")
    assert os.stat(suid).st_mode & stat.S_ISUID
    # A data root an older flotilla made world-searchable, files readable: a start fixes it.
    os.chmod(rt.paths.root, 0o755)
    os.chmod(rt.paths.containers, 0o755)
    bundle = rt.paths.container(rec.id)
    os.chmod(os.path.join(bundle, "config.json"), 0o644)
    await rt.close()
    again = Runtime(
        rt.paths.root, node_name=rt.node_name, bridge_name=rt.bridge.name, bridge_subnet=SUBNET
    )
    await again.open()
    try:
        await again.start(rec.id)
        await again.wait(rec.id)
        # dockerd's: the data root and containers/ 0710, image metadata 0700, volumes/ 0701.
        modes = {"": 0o710, "containers": 0o710, "images": 0o700, "volumes": 0o701}
        for d, mode in modes.items():
            assert stat.S_IMODE(os.stat(os.path.join(rt.paths.root, d)).st_mode) == mode, d
        for name in ("config.json", "spec"):
            assert stat.S_IMODE(os.stat(os.path.join(bundle, name)).st_mode) == 0o600, name
        # The attack: an unprivileged host user runs the layer's setuid-root busybox (the
        # shell's 126: the lookup is refused before the kernel looks at the setuid bit).
        result = as_nobody(f"{suid} true")
        assert result.returncode == 126 and "Permission denied" in result.stderr, result
        result = as_nobody(f"cat {bundle}/config.json")
        assert result.returncode != 0 and "TOKEN=secret" not in result.stdout, result
    finally:
        await again.remove(rec.id, force=True)
        await again.close()
