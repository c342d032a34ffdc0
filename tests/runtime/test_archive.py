"""runtime/archive_*.py (docker cp, export) against a fake container root in a temp
dir (no namespaces needed)."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile

import pytest

from proto.docker.archive import decode_stat_header, encode_stat_header
from proto.docker.errors import InvalidParameter, NotFound, SystemError_
from runtime import archive_pack, archive_paths, archive_stat, archive_unpack
from tests.tarballs import Entry, tar_of_entries


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "hostname").write_text("box\n")
    (r / "data" / "sub").mkdir(parents=True)
    (r / "data" / "a.txt").write_text("aaa")
    (r / "data" / "sub" / "b.txt").write_text("bb")
    os.chown(r / "data" / "a.txt", 1234, 5678)
    os.symlink("/data", r / "abslink")  # absolute: must resolve inside root
    os.symlink("../../../../data", r / "etc" / "uplink")  # climbs above root: clamped
    os.symlink("/etc", r / "etclink")
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    return str(r)


def _tar(entries: list[Entry]) -> io.BytesIO:
    return io.BytesIO(tar_of_entries(entries))


def _info(name: str, kind: bytes = tarfile.REGTYPE, **kw) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = kw.get("mode", 0o644)
    info.uid = kw.get("uid", 0)
    info.gid = kw.get("gid", 0)
    info.mtime = kw.get("mtime", 1_700_000_000)
    info.linkname = kw.get("linkname", "")
    return info


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _names(buf: io.BytesIO) -> list[str]:
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        return tar.getnames()


# ---------------------------------------------------------------- resolve


def test_resolve_reroots_absolute_and_clamps_dotdot(root):
    assert archive_paths.resolve_in_root(root, "/abslink/a.txt") == f"{root}/data/a.txt"
    assert archive_paths.resolve_in_root(root, "/etc/uplink/sub") == f"{root}/data/sub"
    assert archive_paths.resolve_in_root(root, "/../../etc") == f"{root}/etc"
    assert archive_paths.resolve_in_root(root, "/abslink", follow_last=False) == f"{root}/abslink"
    assert archive_paths.resolve_in_root(root, "/nope/x") == f"{root}/nope/x"


def test_resolve_symlink_loop(root):
    with pytest.raises(SystemError_):
        archive_paths.resolve_in_root(root, "/loop1/x")


# ---------------------------------------------------------------- stat


def test_stat_file_dir_symlink(root):
    st = archive_stat.stat_path(root, "/data/a.txt")
    assert st["name"] == "a.txt" and st["size"] == 3 and st["linkTarget"] == ""
    assert st["mode"] == 0o644
    assert st["mtime"].endswith("Z")
    d = archive_stat.stat_path(root, "data")
    assert d["mode"] == archive_stat.GO_MODE_DIR | 0o755
    link = archive_stat.stat_path(root, "/abslink")
    assert link["mode"] == archive_stat.GO_MODE_SYMLINK | 0o777
    assert link["linkTarget"] == "/data"
    # A trailing slash follows the link, as Lstat("/abslink/") does.
    assert archive_stat.stat_path(root, "/abslink/")["mode"] & archive_stat.GO_MODE_DIR
    assert archive_stat.stat_path(root, "/")["name"] == "/"


def test_stat_missing_uses_docker_wording(root):
    with pytest.raises(NotFound) as e:
        archive_stat.stat_path(root, "/nope", container="web")
    assert e.value.status == 404
    assert str(e.value) == "Could not find the file /nope in container web"


def test_stat_header_roundtrip(root):
    st = archive_stat.stat_path(root, "/data/a.txt")
    header = encode_stat_header(st)
    assert decode_stat_header(header) == st
    assert "\n" not in header


def test_go_mode_special_bits():
    assert archive_stat.go_file_mode(0o104755) == archive_stat.GO_MODE_SETUID | 0o755
    assert (
        archive_stat.go_file_mode(0o41777)
        == archive_stat.GO_MODE_DIR | archive_stat.GO_MODE_STICKY | 0o777
    )
    assert archive_stat.go_file_mode(0o20666) == (
        archive_stat.GO_MODE_DEVICE | archive_stat.GO_MODE_CHAR_DEVICE | 0o666
    )


# ---------------------------------------------------------------- get


def test_get_archive_dir_uses_basename(root):
    buf = io.BytesIO()
    st = archive_pack.get_archive(root, "/data", buf)
    assert st["name"] == "data"
    assert _names(buf) == ["data", "data/a.txt", "data/sub", "data/sub/b.txt"]
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        a = tar.getmember("data/a.txt")
        assert (a.uid, a.gid, a.uname, a.gname) == (1234, 5678, "", "")
        assert tar.extractfile(a).read() == b"aaa"


def test_get_archive_dot_gives_contents(root):
    buf = io.BytesIO()
    archive_pack.get_archive(root, "/abslink/.", buf)
    assert _names(buf) == [".", "./a.txt", "./sub", "./sub/b.txt"]


def test_get_archive_symlink_not_followed(root):
    buf = io.BytesIO()
    archive_pack.get_archive(root, "/etclink", buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        (m,) = tar.getmembers()
        assert m.issym() and m.name == "etclink" and m.linkname == "/etc"


def test_get_archive_missing(root):
    with pytest.raises(NotFound):
        archive_pack.get_archive(root, "/missing", io.BytesIO(), container="c1")


# ---------------------------------------------------------------- put


def test_put_archive_extracts_with_metadata(root):
    src = _tar(
        [
            (_info("new", tarfile.DIRTYPE, mode=0o750, uid=7, gid=8), None),
            (_info("new/f.txt", mode=0o4711, uid=7, gid=8, mtime=1_600_000_000), b"hi"),
            (_info("new/l", tarfile.SYMTYPE, linkname="/etc/hostname"), None),
            (
                _info(
                    "new/h",
                    tarfile.LNKTYPE,
                    linkname="new/f.txt",
                    mode=0o4711,
                    uid=7,
                    gid=8,
                    mtime=1_600_000_000,
                ),
                None,
            ),
        ]
    )
    archive_unpack.put_archive(root, "/data", src)
    f = os.path.join(root, "data/new/f.txt")
    st = os.lstat(f)
    assert _read(f) == "hi"
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (7, 8, 0o4711)
    assert st.st_mtime == 1_600_000_000 and st.st_nlink == 2
    assert os.readlink(os.path.join(root, "data/new/l")) == "/etc/hostname"
    assert os.lstat(os.path.join(root, "data/new")).st_mode & 0o777 == 0o750


def test_put_archive_through_symlink_destination(root):
    archive_unpack.put_archive(root, "/abslink", _tar([(_info("x"), b"x")]))
    assert os.path.exists(os.path.join(root, "data/x"))


def test_put_archive_never_escapes_root(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    # A symlink entry pointing at an absolute host path, then a file "through" it: the link is
    # read in the container's scope, so the file lands in <root>/<outside>, not on the host.
    src = _tar(
        [(_info("esc", tarfile.SYMTYPE, linkname=str(outside)), None), (_info("esc/pwn"), b"!")]
    )
    archive_unpack.put_archive(root, "/", src)
    assert not (outside / "pwn").exists()
    assert os.path.exists(os.path.join(root, str(outside).lstrip("/"), "pwn"))
    with pytest.raises(SystemError_, match="is outside of"):
        archive_unpack.put_archive(root, "/data", _tar([(_info("../../evil"), b"!")]))
    assert not (tmp_path / "evil").exists()
    with pytest.raises(SystemError_, match="invalid hardlink"):
        archive_unpack.put_archive(
            root, "/data", _tar([(_info("h", tarfile.LNKTYPE, linkname="../../../x"), None)])
        )


def test_put_archive_destination_errors(root):
    with pytest.raises(NotFound) as e:
        archive_unpack.put_archive(root, "/nope", _tar([]), container="web")
    assert str(e.value) == "Could not find the file /nope in container web"
    with pytest.raises(InvalidParameter) as e2:
        archive_unpack.put_archive(root, "/data/a.txt", _tar([]))
    assert str(e2.value) == "extraction point is not a directory"
    assert e2.value.status == 400


def test_put_archive_no_overwrite_dir_non_dir(root):
    with pytest.raises(SystemError_, match="cannot overwrite directory"):
        archive_unpack.put_archive(root, "/data", _tar([(_info("sub"), b"f")]), True)
    with pytest.raises(SystemError_, match="cannot overwrite non-directory"):
        archive_unpack.put_archive(
            root, "/data", _tar([(_info("a.txt", tarfile.DIRTYPE), None)]), True
        )
    # Without the flag Docker replaces either way.
    archive_unpack.put_archive(root, "/data", _tar([(_info("sub"), b"f")]))
    assert _read(os.path.join(root, "data/sub")) == "f"


def test_put_archive_chown_to_and_gzip(root):
    raw = _tar([(_info("g.txt", uid=5), b"gz")]).getvalue()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
        gz.write(raw)
    buf.seek(0)
    archive_unpack.put_archive(root, "/data", buf, chown_to=(42, 43))
    st = os.lstat(os.path.join(root, "data/g.txt"))
    assert (st.st_uid, st.st_gid) == (42, 43)


def test_roundtrip_get_then_put(root, tmp_path):
    buf = io.BytesIO()
    archive_pack.get_archive(root, "/data", buf)
    buf.seek(0)
    archive_unpack.put_archive(root, "/etc", buf)
    assert _read(os.path.join(root, "etc/data/sub/b.txt")) == "bb"
    assert os.lstat(os.path.join(root, "etc/data/a.txt")).st_uid == 1234


# ---------------------------------------------------------------- export


def test_export_tree(root):
    buf = io.BytesIO()
    archive_pack.export_tree(root, buf)
    names = _names(buf)
    assert "etc/hostname" in names and "data/sub/b.txt" in names and "abslink" in names
    assert not any(n.startswith(("/", "./")) for n in names)


def test_file_capabilities_survive_get_and_put(root):
    ping = os.path.join(root, "data/ping")
    with open(ping, "w") as f:
        f.write("x")
    cap = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # cap_net_raw+ep, VFS cap v2
    try:
        os.setxattr(ping, "security.capability", cap)
    except OSError:
        pytest.skip("filesystem without security xattrs")
    buf = io.BytesIO()
    archive_pack.get_archive(root, "/data/ping", buf)
    buf.seek(0)
    archive_unpack.put_archive(root, "/etc", buf)
    assert os.getxattr(os.path.join(root, "etc/ping"), "security.capability") == cap


def test_put_archive_empty_body_and_garbage(root):
    archive_unpack.put_archive(root, "/data", io.BytesIO(b""))
    with pytest.raises(SystemError_, match="Error processing tar file"):
        archive_unpack.put_archive(root, "/data", io.BytesIO(b"not a tar at all" * 64))
