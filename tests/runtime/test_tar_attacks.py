"""Hostile tar entries against every path that unpacks one: layer unpacking, `docker import`,
`docker load` (the outer archive and its layers), `docker commit` and `docker cp` (PUT archive).
Each attack names a host path that must never be written, read or deleted.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
import tarfile
from collections.abc import Iterator

import pytest

from proto.docker.errors import DockerError, InvalidParameter, SystemError_
from runtime import archive_pack, archive_unpack, image_transfer, layers
from runtime.images import ImageStore
from tests.attack_kit import dev_node, save_archive, tar_info
from tests.tarballs import Entry, tar_of_entries


@pytest.fixture
def host(tmp_path: str) -> Iterator[dict[str, str]]:
    """Host paths an attack aims at: a directory with a secret, and names in /tmp."""
    token = secrets.token_hex(4)
    outside = os.path.join(tmp_path, "outside")
    os.mkdir(outside)
    with open(os.path.join(outside, "secret"), "w") as f:
        f.write("HOST")
    paths = {"outside": outside, "abs": f"/tmp/flt-abs-{token}", "token": token}
    yield paths
    for p in (paths["abs"],):
        if os.path.lexists(p):
            os.unlink(p)


def _attacks(host: dict[str, str]) -> dict[str, tuple[list[Entry], str]]:
    """name -> (entries, the error text, "" when dockerd accepts the tar)."""
    out = host["outside"]
    return {
        "dotdot": ([(tar_info("a/../../escape"), b"x")], "is outside of"),
        "hardlink-out": (
            [tar_info("h", tarfile.LNKTYPE, "../../outside/secret")],
            "invalid hardlink",
        ),
        "hardlink-via-symlink": (
            [tar_info("s", tarfile.SYMTYPE, out), tar_info("h", tarfile.LNKTYPE, "s/secret")],
            "is outside of",
        ),
        "symlink-then-write": (
            [tar_info("a", tarfile.SYMTYPE, out), (tar_info("a/pwn"), b"x")],
            "is outside of",
        ),
        "whiteout-dotdot": (
            [(tar_info("keep/f"), b"k"), (tar_info("keep/.wh..."), b"")],
            "is outside of",
        ),
        "whiteout-dotdot-root": ([(tar_info(".wh..."), b"")], "is outside of"),
        "whiteout-dot": ([(tar_info("keep/.wh.."), b"")], "is outside of"),
    }


def _untouched(host: dict[str, str], tmp_path: str) -> None:
    assert os.listdir(host["outside"]) == ["secret"]
    assert not os.path.exists(os.path.join(tmp_path, "escape"))
    assert not os.path.lexists(host["abs"])


# ---------------------------------------------------------------- layer unpacking


@pytest.mark.parametrize("attack", sorted(_attacks({"outside": "/x", "abs": "", "token": ""})))
def test_unpack_layer_refuses(attack: str, host: dict[str, str], tmp_path: str) -> None:
    entries, text = _attacks(host)[attack]
    parent = os.path.join(tmp_path, "layers", "l1")
    dest = os.path.join(parent, "diff")
    os.makedirs(dest)
    with open(os.path.join(parent, "sibling"), "w") as f:
        f.write("s")
    with pytest.raises(InvalidParameter, match=text) as err:
        layers.unpack_layer(io.BytesIO(tar_of_entries(entries)), dest)
    assert err.value.status == 400
    # Whatever was half unpacked, nothing above dest went away.
    assert os.path.exists(os.path.join(parent, "sibling")) and os.path.isdir(dest)
    _untouched(host, tmp_path)


def test_unpack_layer_absolute_and_device_like_dockerd(host: dict[str, str], tmp_path: str):
    dest = os.path.join(tmp_path, "diff")
    entries: list[Entry] = [(tar_info(host["abs"]), b"x"), dev_node("dev/mem2", 1, 1)]
    layers.unpack_layer(io.BytesIO(tar_of_entries(entries)), dest)
    # "/tmp/x" is "tmp/x" under the layer, as filepath.Join(dest, name) makes it.
    assert os.path.exists(os.path.join(dest, host["abs"].lstrip("/")))
    # dockerd creates device nodes from layers (not in a user namespace); the device cgroup and
    # nodev are what keep them unusable in a container.
    st = os.lstat(os.path.join(dest, "dev/mem2"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 1)
    _untouched(host, tmp_path)


# ---------------------------------------------------------------- import and load


@pytest.fixture
def store(tmp_path: str) -> ImageStore:
    return ImageStore(os.path.join(tmp_path, "root"))


def _store_intact(store: ImageStore) -> None:
    assert os.path.isdir(os.path.join(store.paths.images, "tmp"))
    assert store.images() == {}


@pytest.mark.parametrize("attack", sorted(_attacks({"outside": "/x", "abs": "", "token": ""})))
def test_import_refuses(attack: str, host: dict[str, str], tmp_path: str, store: ImageStore):
    entries, text = _attacks(host)[attack]
    with pytest.raises(InvalidParameter, match=text):
        image_transfer.import_tarball(store, io.BytesIO(tar_of_entries(entries)), "evil:1")
    _store_intact(store)
    _untouched(host, tmp_path)


@pytest.mark.parametrize("attack", sorted(_attacks({"outside": "/x", "abs": "", "token": ""})))
def test_load_refuses_hostile_layer(
    attack: str, host: dict[str, str], tmp_path: str, store: ImageStore
) -> None:
    entries, text = _attacks(host)[attack]
    src = save_archive(tar_of_entries(entries))
    with pytest.raises(InvalidParameter, match=text):
        image_transfer.load(store, io.BytesIO(src))
    _store_intact(store)
    _untouched(host, tmp_path)


def test_load_outer_archive_attacks(host: dict[str, str], tmp_path: str, store: ImageStore):
    layer = tar_of_entries([(tar_info("ok"), b"ok")])
    # A whiteout of ".." in the save archive itself would delete the store's tmp dir.
    with pytest.raises(InvalidParameter, match="is outside of"):
        image_transfer.load(store, io.BytesIO(save_archive(layer, [(tar_info(".wh..."), b"")])))
    _store_intact(store)
    # manifest.json as a link to a host file: read inside the archive, where it does not exist.
    host_manifest = os.path.join(host["outside"], "manifest.json")
    with open(host_manifest, "w") as f:
        json.dump([{"Config": "c.json", "RepoTags": ["fromhost:1"], "Layers": []}], f)
    archive_bytes = tar_of_entries(
        [tar_info("manifest.json", tarfile.SYMTYPE, host_manifest), (tar_info("c.json"), b"{}")]
    )
    with pytest.raises(InvalidParameter):
        image_transfer.load(store, io.BytesIO(archive_bytes))
    assert store.tags() == {}
    os.unlink(host_manifest)
    _untouched(host, tmp_path)


# ---------------------------------------------------------------- commit


def test_commit_packs_links_not_their_targets(host: dict[str, str], store: ImageStore):
    upper = os.path.join(os.path.dirname(store.paths.images), "upper")
    os.makedirs(os.path.join(upper, "d"))
    os.symlink(host["outside"], os.path.join(upper, "d", "escape"))
    os.symlink("/", os.path.join(upper, "root"))
    image_id = store.commit(upper, None, {})
    (diff_id,) = store.diff_ids(image_id)
    with tarfile.open(store.blob_path(diff_id)) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert names["d/escape"].issym() and names["root"].issym()
    assert not any("secret" in n for n in names)


def test_commit_of_dotdot_whiteout_is_refused(store: ImageStore, tmp_path: str) -> None:
    upper = os.path.join(tmp_path, "upper")
    os.makedirs(os.path.join(upper, "a"))
    with open(os.path.join(upper, "a", ".wh..."), "w"):
        pass  # what a container can create in its own filesystem
    with pytest.raises(InvalidParameter, match="is outside of"):
        store.commit(upper, None, {})
    _store_intact(store)


# ---------------------------------------------------------------- docker cp (PUT archive)


@pytest.fixture
def rootfs(tmp_path: str) -> str:
    root = os.path.join(tmp_path, "rootfs")
    os.makedirs(os.path.join(root, "etc"))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("container")
    return root


def _put(root: str, dest: str, entries: list[Entry]) -> None:
    archive_unpack.put_archive(root, dest, io.BytesIO(tar_of_entries(entries)))


def test_cp_refuses_breakouts(rootfs: str, host: dict[str, str], tmp_path: str) -> None:
    with pytest.raises(SystemError_, match="is outside of"):
        _put(rootfs, "/etc", [(tar_info("../../escape"), b"x")])
    with pytest.raises(SystemError_, match='invalid hardlink "/outside/secret"'):
        _put(rootfs, "/etc", [tar_info("h", tarfile.LNKTYPE, "../outside/secret")])
    # dockerd's check: a relative link may not point above the directory extracted into.
    with pytest.raises(SystemError_, match='invalid symlink "/" -> "../.."'):
        _put(rootfs, "/etc", [tar_info("up", tarfile.SYMTYPE, "../..")])
    _untouched(host, tmp_path)


def test_cp_links_resolve_inside_the_container(rootfs: str, host: dict[str, str], tmp_path):
    _put(
        rootfs,
        "/",
        [
            (tar_info(host["abs"]), b"abs"),  # "/tmp/x" is "tmp/x" under the destination
            tar_info("s", tarfile.SYMTYPE, "/etc"),
            tar_info("h", tarfile.LNKTYPE, "s/passwd"),  # the container's /etc/passwd
            tar_info("w", tarfile.SYMTYPE, host["outside"]),
            (tar_info("w/pwn"), b"x"),  # lands in <root>/<outside>/pwn
            (tar_info(".wh..."), b""),  # docker cp has no whiteouts: a plain file
            dev_node("dev/mem2", 1, 1),
        ],
    )
    assert os.path.exists(os.path.join(rootfs, host["abs"].lstrip("/")))
    h = os.lstat(os.path.join(rootfs, "h"))
    assert h.st_ino == os.lstat(os.path.join(rootfs, "etc", "passwd")).st_ino
    assert os.path.exists(os.path.join(rootfs, host["outside"].lstrip("/"), "pwn"))
    assert os.path.isfile(os.path.join(rootfs, ".wh..."))
    assert stat.S_ISCHR(os.lstat(os.path.join(rootfs, "dev/mem2")).st_mode)
    _untouched(host, tmp_path)


def test_cp_get_never_opens_a_fifo(rootfs: str) -> None:
    os.mkfifo(os.path.join(rootfs, "etc", "fifo"))
    buf = io.BytesIO()
    archive_pack.get_archive(rootfs, "/etc", buf)  # a FIFO is a header, never opened
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        assert tar.getmember("etc/fifo").isfifo()


def test_cp_get_missing_through_link(rootfs: str, host: dict[str, str]) -> None:
    os.symlink(host["outside"], os.path.join(rootfs, "out"))
    # "/out" is <root>/<outside> for the container: the host's secret is not there.
    with pytest.raises(DockerError, match="Could not find the file"):
        archive_pack.get_archive(rootfs, "/out/secret", io.BytesIO())
