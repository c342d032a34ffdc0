"""runtime.layers: whiteout conversion both ways, safety checks, docker diff."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile

import pytest

from proto.docker.errors import InvalidParameter
from runtime import layers
from tests.tarballs import Entry, tar_of_entries


def _tar(entries: list[Entry], gz: bool = False) -> bytes:
    data = tar_of_entries(entries)
    return gzip.compress(data) if gz else data


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **kw: object
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 1_700_000_000
    for key, value in kw.items():
        setattr(info, key, value)
    return info


def _file(name: str, data: bytes, mode: int = 0o644, **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.REGTYPE, mode, **kw), data


def test_unpack_preserves_metadata_and_converts_whiteouts(tmp_path: str) -> None:
    dest = os.path.join(tmp_path, "layer")
    xattr_file = _info("etc/x", tarfile.REGTYPE, 0o600)
    xattr_file.pax_headers = {"SCHILY.xattr.user.flotilla": "yes"}
    data = _tar(
        [
            _info("etc/", tarfile.DIRTYPE, 0o755),
            _file("etc/passwd", b"root:x:0:0\n", 0o640, uid=12, gid=34),
            (xattr_file, b"x"),
            _info("etc/link", tarfile.SYMTYPE, linkname="passwd"),
            _info("etc/hard", tarfile.LNKTYPE, linkname="etc/passwd"),
            _info("etc/fifo", tarfile.FIFOTYPE, 0o600),
            _info("dev/", tarfile.DIRTYPE, 0o755),
            _info("dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3),
            _file("etc/.wh.gone", b""),
            _info("opq/", tarfile.DIRTYPE, 0o700),
            _file("opq/.wh..wh..opq", b""),
            _file("tmp/suid", b"#!", 0o4755),
        ],
        gz=True,
    )
    layers.unpack_layer(io.BytesIO(data), dest)

    st = os.lstat(os.path.join(dest, "etc/passwd"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 12, 34)
    assert int(st.st_mtime) == 1_700_000_000
    assert os.readlink(os.path.join(dest, "etc/link")) == "passwd"
    assert os.lstat(os.path.join(dest, "etc/hard")).st_ino == st.st_ino
    assert stat.S_ISFIFO(os.lstat(os.path.join(dest, "etc/fifo")).st_mode)
    null = os.lstat(os.path.join(dest, "dev/null"))
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    gone = os.lstat(os.path.join(dest, "etc/gone"))
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert not os.path.exists(os.path.join(dest, "etc/.wh.gone"))
    assert os.getxattr(os.path.join(dest, "opq"), "trusted.overlay.opaque") == b"y"
    assert not os.path.exists(os.path.join(dest, "opq/.wh..wh..opq"))
    assert os.getxattr(os.path.join(dest, "etc/x"), "user.flotilla") == b"yes"
    assert stat.S_IMODE(os.lstat(os.path.join(dest, "tmp/suid")).st_mode) == 0o4755
    assert int(os.lstat(os.path.join(dest, "etc")).st_mtime) == 1_700_000_000


@pytest.mark.parametrize(
    "entries",
    [
        [_file("../escape", b"x")],
        [_info("a/../../escape", tarfile.REGTYPE)],
        [_info("link", tarfile.SYMTYPE, linkname="/"), _file("link/escape", b"x")],
        [_info("hl", tarfile.LNKTYPE, linkname="../../etc/passwd")],
    ],
)
def test_unpack_refuses_escapes(tmp_path: str, entries: list) -> None:
    dest = os.path.join(tmp_path, "layer")
    with pytest.raises(InvalidParameter):
        layers.unpack_layer(io.BytesIO(_tar(entries)), dest)
    assert not os.path.exists(os.path.join(tmp_path, "escape"))


def test_unpack_garbage_is_invalid(tmp_path: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        layers.unpack_layer(io.BytesIO(b"not a tar at all" * 100), str(tmp_path))
    assert err.value.status == 400


def test_flat_apply_deletes_lower_entries(tmp_path: str) -> None:
    dest = os.path.join(tmp_path, "flat")
    lower = _tar([_file("a/keep", b"1"), _file("a/drop", b"2"), _file("o/old", b"3")])
    upper = _tar(
        [
            _file("a/.wh.drop", b""),
            _info("o/", tarfile.DIRTYPE, 0o755),
            _file("o/.wh..wh..opq", b""),
            _file("o/new", b"4"),
        ]
    )
    layers.apply_layer_flat(io.BytesIO(lower), dest)
    layers.apply_layer_flat(io.BytesIO(upper), dest)
    assert sorted(os.listdir(os.path.join(dest, "a"))) == ["keep"]
    assert sorted(os.listdir(os.path.join(dest, "o"))) == ["new"]


def _make_upper(root: str) -> None:
    os.makedirs(os.path.join(root, "etc"))
    with open(os.path.join(root, "etc/new"), "w") as f:
        f.write("hello")
    os.link(os.path.join(root, "etc/new"), os.path.join(root, "etc/new2"))
    os.mknod(os.path.join(root, "etc/passwd"), stat.S_IFCHR, os.makedev(0, 0))
    os.makedirs(os.path.join(root, "var/cache"))
    os.setxattr(os.path.join(root, "var/cache"), "trusted.overlay.opaque", b"y")
    os.symlink("/etc/new", os.path.join(root, "var/ln"))


def test_tar_from_upper_round_trips(tmp_path: str) -> None:
    upper = os.path.join(tmp_path, "upper")
    _make_upper(upper)
    buf = io.BytesIO()
    layers.tar_layer_from_upper(upper, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["etc/.wh.passwd"].isreg() and members["etc/.wh.passwd"].size == 0
    assert members["var/cache/.wh..wh..opq"].isreg()
    assert members["etc/new2"].islnk() and members["etc/new2"].linkname == "etc/new"
    assert not any("trusted.overlay" in k for m in members.values() for k in m.pax_headers)
    again = os.path.join(tmp_path, "again")
    buf.seek(0)
    layers.unpack_layer(buf, again)
    assert os.lstat(os.path.join(again, "etc/passwd")).st_rdev == 0
    assert os.getxattr(os.path.join(again, "var/cache"), "trusted.overlay.opaque") == b"y"
    with open(os.path.join(again, "etc/new2")) as f:
        assert f.read() == "hello"
    # Deterministic: the same tree gives the same bytes.
    second = io.BytesIO()
    layers.tar_layer_from_upper(upper, second)
    assert second.getvalue() == buf.getvalue()


def test_tar_tree_keeps_plain_entries(tmp_path: str) -> None:
    root = os.path.join(tmp_path, "root")
    os.makedirs(os.path.join(root, "a/b"))
    with open(os.path.join(root, "a/b/f"), "w") as f:
        f.write("x")
    buf = io.BytesIO()
    layers.tar_tree(root, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        assert tar.getnames() == ["a", "a/b", "a/b/f"]


def test_changes_like_docker_diff(tmp_path: str) -> None:
    lower = os.path.join(tmp_path, "lower")
    upper = os.path.join(tmp_path, "upper")
    os.makedirs(os.path.join(lower, "etc"))
    os.makedirs(os.path.join(lower, "var/cache"))
    for name in ("etc/passwd", "etc/hosts", "var/cache/x"):
        with open(os.path.join(lower, name), "w") as f:
            f.write("old")
    os.makedirs(os.path.join(upper, "etc"))
    os.makedirs(os.path.join(upper, "var"))
    with open(os.path.join(upper, "etc/hosts"), "w") as f:
        f.write("new")
    with open(os.path.join(upper, "etc/added"), "w") as f:
        f.write("new")
    os.mknod(os.path.join(upper, "etc/passwd"), stat.S_IFCHR, os.makedev(0, 0))
    os.makedirs(os.path.join(upper, "tmp/sub"))
    result = layers.changes(upper, [lower])
    assert result == [
        {"Path": "/etc", "Kind": 0},
        {"Path": "/etc/added", "Kind": 1},
        {"Path": "/etc/hosts", "Kind": 0},
        {"Path": "/etc/passwd", "Kind": 2},
        {"Path": "/tmp", "Kind": 1},
        {"Path": "/tmp/sub", "Kind": 1},
        {"Path": "/var", "Kind": 0},
    ]
