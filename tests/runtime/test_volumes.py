"""runtime.volumes: shapes and wording against dockerd's golden responses (runs as root)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading

import pytest

from proto.docker.errors import Conflict, InvalidParameter, NotFound
from runtime.paths import DataRoot
from runtime.volumes import VolumeStore

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")


@pytest.fixture
def store(tmp_path):
    root = DataRoot(str(tmp_path / "data"))
    yield VolumeStore(root)
    # Unmount anything a test left mounted below the data root, deepest first.
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if line.split()[1].startswith(root.root)]
    for m in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)


def _golden(name: str) -> dict:
    with open(os.path.join(GOLDEN, name)) as f:
        return json.load(f)


def test_create_and_inspect_match_golden_shape(store):
    v = store.create("goldvol", labels={"team": "golden"})
    golden = _golden("volume-inspect-goldvol.json")
    assert list(v) == list(golden)
    assert v["Mountpoint"] == os.path.join(store.root.root, "volumes/goldvol/_data")
    assert os.path.isdir(v["Mountpoint"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", v["CreatedAt"])
    expected = {k: golden[k] for k in ("Driver", "Labels", "Name", "Options", "Scope")}
    assert {k: v[k] for k in expected} == expected
    assert store.inspect("goldvol") == v
    with open(os.path.join(store.root.volumes, "goldvol", "opts.json")) as f:
        assert json.load(f)["Labels"] == {"team": "golden"}


def test_create_existing_returns_it_and_generated_names(store):
    first = store.create("same", labels={"a": "1"})
    assert store.create("same", labels={"b": "2"}) == first
    anon = store.create(None)
    assert re.fullmatch(r"[0-9a-f]{64}", anon["Name"])


def test_missing_volume_wording(store):
    golden = _golden("error-404-missing-volume.json")
    with pytest.raises(NotFound) as e:
        store.inspect("nosuchvol")
    assert {"message": str(e.value)} == golden
    with pytest.raises(NotFound):
        store.remove("nosuchvol")
    store.remove("nosuchvol", force=True)


def test_invalid_names_and_options(store):
    with pytest.raises(InvalidParameter) as e:
        store.create("bad/name")
    assert str(e.value) == (
        'create bad/name: "bad/name" includes invalid characters for a local volume name, '
        'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
        "directory, use absolute path"
    )
    with pytest.raises(InvalidParameter, match="too short"):
        store.create("x")
    with pytest.raises(InvalidParameter, match='invalid option: "bogus"'):
        store.create("v1", driver_opts={"bogus": "1"})
    with pytest.raises(InvalidParameter, match='missing required option: "device"'):
        store.create("v1", driver_opts={"type": "tmpfs"})
    with pytest.raises(NotFound) as e2:
        store.create("v1", driver="nfsplug")
    assert str(e2.value) == (
        'create v1: error looking up volume plugin nfsplug: plugin "nfsplug" not found'
    )
    assert store.list_volumes() == []


def test_list_remove_in_use_and_prune(store):
    store.create("keep1", labels={"tier": "db"})
    store.create("gone2")
    store.create("gone3", labels={"tier": "web"})
    assert [v["Name"] for v in store.list_volumes()] == ["gone2", "gone3", "keep1"]
    assert [v["Name"] for v in store.list_volumes({"label": ["tier=db"]})] == ["keep1"]
    assert [v["Name"] for v in store.list_volumes({"name": ["gone"]})] == ["gone2", "gone3"]
    with pytest.raises(Conflict) as e:
        store.remove("keep1", force=True, in_use=["abc123", "def456"])
    assert str(e.value) == "remove keep1: volume is in use - [abc123, def456]"
    with open(os.path.join(store.mountpoint("gone2"), "f"), "wb") as f:
        f.write(b"x" * 8192)
    report = store.prune(in_use=["keep1"], filters={"label!": ["tier=web"]})
    assert report["VolumesDeleted"] == ["gone2"] and report["SpaceReclaimed"] >= 8192
    assert store.prune(in_use=["keep1", "gone3"]) == {"VolumesDeleted": None, "SpaceReclaimed": 0}
    store.remove("gone3")
    assert not os.path.exists(os.path.join(store.root.volumes, "gone3"))
    assert [v["Name"] for v in store.list_volumes()] == ["keep1"]


def test_tmpfs_volume_mounted_on_first_use(store):
    opts = {"type": "tmpfs", "device": "tmpfs", "o": "size=1m,nosuid"}
    v = store.create("tmpvol", driver_opts=opts)
    assert v["Options"] == opts
    path = store.mount("tmpvol")
    assert os.path.ismount(path)
    assert store.mount("tmpvol") == path  # idempotent
    with open("/proc/self/mounts") as f:
        line = next(line for line in f if line.split()[1] == path)
    assert "tmpfs" in line and "nosuid" in line and "size=1024k" in line
    store.remove("tmpvol")
    assert not os.path.ismount(path) and not os.path.exists(path)


def test_copy_up_preserves_everything(store, tmp_path):
    src = tmp_path / "image" / "var" / "lib" / "app"
    (src / "sub").mkdir(parents=True)
    (src / "file").write_text("content")
    os.chown(src / "file", 1000, 1001)
    os.chmod(src / "file", 0o4750)
    os.link(src / "file", src / "hard")
    os.symlink("../file", src / "sub" / "rel")
    os.symlink("/etc", src / "dirlink")
    os.mkfifo(src / "fifo")
    os.setxattr(src / "file", "user.tag", b"v1")
    os.chown(src, 33, 33)
    os.chmod(src, 0o711)
    os.utime(src / "sub", (1_600_000_000, 1_600_000_000))
    store.create("cp")
    assert store.copy_up("cp", str(tmp_path / "image"), "/var/lib/app") is True
    dst = store.mountpoint("cp")
    st = os.lstat(os.path.join(dst, "file"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_nlink) == (1000, 1001, 0o4750, 2)
    assert os.getxattr(os.path.join(dst, "file"), "user.tag") == b"v1"
    assert os.readlink(os.path.join(dst, "sub/rel")) == "../file"
    assert os.readlink(os.path.join(dst, "dirlink")) == "/etc"
    assert os.path.exists(os.path.join(dst, "fifo"))
    assert os.lstat(os.path.join(dst, "sub")).st_mtime == 1_600_000_000
    root_st = os.lstat(dst)
    assert (root_st.st_uid, root_st.st_mode & 0o777) == (33, 0o711)
    # Not empty any more: a second copy-up is a no-op.
    assert store.copy_up("cp", str(tmp_path / "image"), "/var/lib/app") is False


def test_concurrent_creates_are_safe(store):
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            store.create("racy")
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and [v["Name"] for v in store.list_volumes()] == ["racy"]
