"""The image store and what is built on it (runtime.images, image_transfer, image_views):
import, inspect/list/history shapes, tags, rmi rules, save/load, commit.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator

import pytest

from deploy.busybox_image import build_rootfs_tar
from proto.docker.errors import Conflict, InvalidParameter, NotFound
from runtime import image_transfer, image_views, layers
from runtime.images import ImageStore
from tests.tarballs import tar_of

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")


def _golden(name: str) -> object:
    with open(os.path.join(GOLDEN, name)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def busybox_tar() -> Iterator[bytes]:
    with tempfile.TemporaryDirectory() as d:
        path = build_rootfs_tar(os.path.join(d, "bb.tar"))
        with open(path, "rb") as f:
            yield f.read()


@pytest.fixture
def store(tmp_path: str) -> ImageStore:
    return ImageStore(os.path.join(tmp_path, "root"))


@pytest.fixture
def busybox(store: ImageStore, busybox_tar: bytes) -> str:
    changes = ['CMD ["sh"]', "ENV PATH=/bin:/usr/bin", "WORKDIR /root"]
    return image_transfer.import_tarball(
        store, io.BytesIO(busybox_tar), "busybox", changes, "rootfs"
    )


def _archive(files: dict[str, bytes]) -> io.BytesIO:
    return io.BytesIO(tar_of(files))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _two_layer_archive(tag: str = "multi:1") -> io.BytesIO:
    """docker-save archive: layer 2 deletes /etc/motd and makes /data opaque."""
    base = tar_of({"etc": None, "etc/motd": b"hi", "etc/keep": b"k", "data": None, "data/a": b"a"})
    top = tar_of({"etc/.wh.motd": b"", "data": None, "data/.wh..wh..opq": b"", "data/b": b"b"})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {"Cmd": ["sh"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": [f"sha256:{_sha(base)}", f"sha256:{_sha(top)}"],
            },
            "history": [{"created": "2026-01-01T00:00:00Z"}, {"created": "2026-01-01T00:00:00Z"}],
        }
    ).encode()
    manifest = [
        {"Config": "cfg.json", "RepoTags": [tag], "Layers": ["l1/layer.tar", "l2/layer.tar"]}
    ]
    return _archive(
        {
            "manifest.json": json.dumps(manifest).encode(),
            "cfg.json": config,
            "l1/layer.tar": base,
            "l2/layer.tar": gzip.compress(top),
        }
    )


# --------------------------------------------------------------------------- import & shapes


def test_import_inspect_matches_golden_shape(store: ImageStore, busybox: str) -> None:
    info = image_views.inspect(store, "busybox")
    golden = _golden("image-inspect-busybox.json")
    assert list(info) == list(golden)
    assert list(info["Config"]) == list(golden["Config"])
    assert list(info["ContainerConfig"]) == list(golden["ContainerConfig"])
    assert info["Id"] == busybox and info["RepoTags"] == ["busybox:latest"]
    assert info["Config"]["Cmd"] == ["sh"]
    assert info["Config"]["Env"] == ["PATH=/bin:/usr/bin"]
    assert info["Config"]["WorkingDir"] == "/root"
    assert info["Comment"] == "rootfs"
    assert info["Size"] > 1_000_000 and info["Size"] == info["VirtualSize"]
    assert info["GraphDriver"]["Name"] == "overlay2"
    assert info["RootFS"]["Layers"][0].startswith("sha256:")
    with open(store.blob_path(busybox), "rb") as f:
        assert "sha256:" + _sha(f.read()) == busybox


def test_list_and_history_shapes(store: ImageStore, busybox: str) -> None:
    images = image_views.list_images(store)
    golden = _golden("image-list.json")
    assert [list(i) for i in images] == [list(golden[0])]
    assert images[0]["RepoTags"] == ["busybox:latest"] and images[0]["RepoDigests"] is None
    history = image_views.history(store, "busybox")
    assert [list(h) for h in history] == [list(_golden("image-history-busybox.json")[0])]
    assert history[0]["Id"] == busybox and history[0]["Comment"] == "rootfs"
    assert image_views.list_images(store, filters={"reference": ["busy*"]})[0]["Id"] == busybox
    assert image_views.list_images(store, filters={"reference": ["nope"]}) == []
    assert image_views.list_images(store, filters={"dangling": ["true"]}) == []
    with pytest.raises(InvalidParameter, match="Invalid filter 'foo'"):
        image_views.list_images(store, filters={"foo": ["x"]})


def test_shell_form_changes_and_compressed_input(store: ImageStore, busybox_tar: bytes) -> None:
    changes = ["CMD echo hi", "ENTRYPOINT /bin/sh", "EXPOSE 80 53/udp", 'LABEL a=b c="d e"']
    image = image_transfer.import_tarball(
        store, io.BytesIO(gzip.compress(busybox_tar)), None, changes
    )
    cfg = store.config(image)["config"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "/bin/sh"]
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"a": "b", "c": "d e"}
    assert image_views.list_images(store)[0]["RepoTags"] == ["<none>:<none>"]


def test_more_changes(store: ImageStore, busybox_tar: bytes) -> None:
    changes = [
        "ENV BASE=/srv",
        "WORKDIR $BASE",
        "WORKDIR app",
        "USER nobody",
        'VOLUME ["/data", "/logs"]',
        "HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost",
        "ONBUILD RUN echo hi",
        "stopsignal SIGTERM",
    ]
    with pytest.raises(InvalidParameter, match="stopsignal is not a valid change command"):
        image_transfer.import_tarball(store, io.BytesIO(busybox_tar), None, changes)
    image = image_transfer.import_tarball(store, io.BytesIO(busybox_tar), None, changes[:-1])
    cfg = image_views.inspect(store, image)["Config"]
    assert cfg["WorkingDir"] == "/srv/app" and cfg["User"] == "nobody"
    assert cfg["Volumes"] == {"/data": {}, "/logs": {}}
    assert cfg["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q localhost"],
        "Interval": 5_000_000_000,
        "Retries": 2,
    }
    assert cfg["OnBuild"] == ["RUN echo hi"]


def test_resolve_forms_and_missing(store: ImageStore, busybox: str) -> None:
    hex_id = busybox.removeprefix("sha256:")
    for ref in (
        busybox,
        hex_id,
        hex_id[:12],
        "sha256:" + hex_id[:5],
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "busybox",
    ):
        assert store.resolve(ref) == busybox, ref
    with pytest.raises(NotFound) as err:
        image_views.inspect(store, "nosuchimage")
    assert {"message": err.value.message} == _golden("error-404-missing-image.json")
    with pytest.raises(NotFound) as err:
        store.resolve("nosuchimage:1.0")
    assert {"message": err.value.message} == _golden("error-404-create-missing-image.json")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (["FOO bar"], "foo is not a valid change command"),
        (["RUN true"], "run is not a valid change command"),
        (["ENV"], "ENV requires at least one argument"),
        (["ENV a=1 b"], 'Syntax error - can\'t find = in "b". Must be of the form: name=value'),
        (["ONBUILD ONBUILD RUN x"], "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ],
)
def test_bad_changes(store: ImageStore, changes: list[str], message: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        image_transfer.import_tarball(store, io.BytesIO(tar_of({"f": b"x"})), None, changes)
    assert err.value.message == message and err.value.status == 400
    assert os.listdir(store.paths.blobs) == []


def test_bad_import_leaves_nothing(store: ImageStore) -> None:
    with pytest.raises(InvalidParameter):
        image_transfer.import_tarball(store, io.BytesIO(b"garbage!" * 200))
    assert os.listdir(store.paths.layers) == []
    assert os.listdir(store._tmp) == []


# --------------------------------------------------------------------------- tags & rmi


def test_tag_validation(store: ImageStore, busybox: str) -> None:
    assert store.tag("busybox", "example.com:5000/team/app", "v1") == "example.com:5000/team/app:v1"
    assert store.resolve("example.com:5000/team/app:v1") == busybox
    assert store.tag("busybox", "foo:1") == "foo:1"
    assert store.tag(busybox, "foo") == "foo:latest"
    cases = [
        ("Busybox", "latest", "repository name must be lowercase"),
        ("a//b", "latest", "invalid reference format"),
        ("ok", "-bad", "invalid tag format"),
        ("sha256", "x", "refusing to create an ambiguous tag using digest algorithm as name"),
    ]
    for repo, tag, message in cases:
        with pytest.raises(InvalidParameter) as err:
            store.tag("busybox", repo, tag)
        assert err.value.message == message
    assert image_views.inspect(store, busybox)["Metadata"]["LastTagTime"] != "0001-01-01T00:00:00Z"


def test_remove_rules(store: ImageStore, busybox: str) -> None:
    short = busybox.removeprefix("sha256:")[:12]
    store.tag("busybox", "other")
    assert store.remove("other") == [{"Untagged": "other:latest"}]
    store.tag("busybox", "other")
    with pytest.raises(Conflict) as err:
        store.remove(busybox)
    expected = f"conflict: unable to delete {short} (must be forced) - "
    assert err.value.message == expected + "image is referenced in multiple repositories"

    running = "c" * 64

    def users_running(_: str) -> list[tuple[str, bool]]:
        return [(running, True)]

    with pytest.raises(Conflict) as err:
        store.remove(busybox, force=True, users=users_running)
    assert err.value.message == (
        f"conflict: unable to delete {short} (cannot be forced) - "
        f"image is being used by running container {running[:12]}"
    )
    store.remove("other")

    def users_stopped(_: str) -> list[tuple[str, bool]]:
        return [(running, False)]

    with pytest.raises(Conflict) as err:
        store.remove("busybox", users=users_stopped)
    assert err.value.message == (
        f'conflict: unable to remove repository reference "busybox" (must force) - '
        f"container {running[:12]} is using its referenced image {short}"
    )
    records = store.remove("busybox", force=True, users=users_stopped)
    assert records[0] == {"Untagged": "busybox:latest"}
    assert records[1] == {"Deleted": busybox}
    with pytest.raises(NotFound):
        store.resolve(busybox)


def test_shared_layers_are_refcounted(store: ImageStore, busybox: str, busybox_tar: bytes) -> None:
    other = image_transfer.import_tarball(store, io.BytesIO(busybox_tar), "bb2", ['CMD ["true"]'])
    assert other != busybox
    layer = store.layer_dirs(busybox)[0]
    assert store.layer_dirs(other) == [layer]
    records = store.remove("busybox")
    assert [r for r in records if "Deleted" in r] == [{"Deleted": busybox}]
    assert os.path.isdir(layer)
    records = store.remove("bb2")
    assert records[-1] == {"Deleted": store_layer_id(layer)}
    assert not os.path.exists(layer)
    assert os.listdir(store.paths.blobs) == [] and os.listdir(store.paths.layers) == []


def store_layer_id(layer_dir: str) -> str:
    return "sha256:" + os.path.basename(os.path.dirname(layer_dir))


def test_hold_keeps_layers_of_removed_image(store: ImageStore, busybox: str) -> None:
    layer = store.layer_dirs(busybox)[0]
    store.hold_layers("ctr1", busybox)
    store.remove("busybox", force=True)
    assert os.path.isdir(layer)
    store.release_layers("ctr1")
    assert not os.path.exists(layer)


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip(store: ImageStore, busybox: str, tmp_path: str) -> None:
    buf = io.BytesIO()
    image_transfer.save(store, ["busybox"], buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        names = tar.getnames()
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    assert manifest[0]["Config"] == busybox.removeprefix("sha256:") + ".json"
    assert "repositories" in names and manifest[0]["Layers"][0] in names
    second = ImageStore(os.path.join(tmp_path, "second"))
    buf.seek(0)
    assert image_transfer.load(second, buf) == ["Loaded image: busybox:latest"]
    assert second.resolve("busybox") == busybox
    assert image_views.inspect(second, "busybox")["Config"]["Cmd"] == ["sh"]
    layer = second.layer_dirs(busybox)[0]
    before = os.stat(layer).st_ino
    buf.seek(0)
    assert image_transfer.load(second, buf) == ["Loaded image: busybox:latest"]
    assert os.stat(layer).st_ino == before  # not unpacked twice
    by_id = io.BytesIO()
    image_transfer.save(store, [busybox[7:19]], by_id)
    by_id.seek(0)
    third = ImageStore(os.path.join(tmp_path, "third"))
    assert image_transfer.load(third, by_id) == [f"Loaded image ID: {busybox}"]
    with pytest.raises(NotFound, match="reference does not exist"):
        image_transfer.save(store, ["nosuch:1"], io.BytesIO())


def test_load_bad_archives(store: ImageStore) -> None:
    with pytest.raises(InvalidParameter):
        image_transfer.load(store, io.BytesIO(b"\x00garbage" * 300))
    with pytest.raises(InvalidParameter) as err:
        image_transfer.load(store, _archive({"hello.txt": b"hi"}))
    assert err.value.message.startswith("open ")
    assert err.value.message.endswith("/repositories: no such file or directory")
    layer = tar_of({"f": b"x"})
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}})
    manifest = [{"Config": "c.json", "RepoTags": None, "Layers": ["l/layer.tar"]}]
    bad = _archive(
        {
            "manifest.json": json.dumps(manifest).encode(),
            "c.json": config.encode(),
            "l/layer.tar": layer,
        }
    )
    with pytest.raises(InvalidParameter, match="invalid diffID for layer 0"):
        image_transfer.load(store, bad)
    assert os.listdir(store.paths.layers) == [] and os.listdir(store._tmp) == []


def test_load_oci_layout(store: ImageStore) -> None:
    layer = tar_of({"hello": b"world"})
    layer_gz = gzip.compress(layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_sha(layer)}"]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{_sha(config)}",
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{_sha(layer_gz)}",
                    "size": len(layer_gz),
                }
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{_sha(manifest)}",
                "size": len(manifest),
                "annotations": {"io.containerd.image.name": "docker.io/library/hello:oci"},
            }
        ],
    }
    archive = _archive(
        {
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": json.dumps(index).encode(),
            f"blobs/sha256/{_sha(config)}": config,
            f"blobs/sha256/{_sha(manifest)}": manifest,
            f"blobs/sha256/{_sha(layer_gz)}": layer_gz,
        }
    )
    assert image_transfer.load(store, archive) == ["Loaded image: hello:oci"]
    image = store.resolve("hello:oci")
    assert image == "sha256:" + _sha(config)
    with open(os.path.join(store.layer_dirs(image)[0], "hello")) as f:
        assert f.read() == "world"


# --------------------------------------------------------------------------- overlay & commit


def test_multi_layer_whiteouts_on_real_overlay(store: ImageStore, tmp_path: str) -> None:
    assert image_transfer.load(store, _two_layer_archive()) == ["Loaded image: multi:1"]
    lower = store.layer_dirs("multi:1")
    assert len(lower) == 2
    mnt, upper, work = (os.path.join(tmp_path, n) for n in ("mnt", "upper", "work"))
    for d in (mnt, upper, work):
        os.makedirs(d)
    opts = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, mnt], check=True)
    try:
        assert sorted(os.listdir(os.path.join(mnt, "etc"))) == ["keep"]
        assert sorted(os.listdir(os.path.join(mnt, "data"))) == ["b"]
        with open(os.path.join(mnt, "etc/new"), "w") as f:
            f.write("n")
        os.unlink(os.path.join(mnt, "etc/keep"))
    finally:
        subprocess.run(["umount", mnt], check=True)
    diff = {c["Path"]: c["Kind"] for c in layers.changes(upper, lower)}
    assert diff == {"/etc": 0, "/etc/new": 1, "/etc/keep": 2}


def test_commit_from_upper(store: ImageStore, busybox: str, tmp_path: str) -> None:
    upper = os.path.join(tmp_path, "upper")
    os.makedirs(os.path.join(upper, "etc"))
    with open(os.path.join(upper, "etc/motd"), "w") as f:
        f.write("committed\n")
    os.mknod(os.path.join(upper, "etc/group"), stat.S_IFCHR, os.makedev(0, 0))
    config = {"Cmd": None, "Env": ["X=1"], "Image": "busybox", "Labels": {"k": "v"}}
    child = store.commit(upper, busybox, config, "my comment", "me", "snap:v1", "sh -c touch")
    info = image_views.inspect(store, "snap:v1")
    assert info["Id"] == child and info["Parent"] == busybox
    assert info["Comment"] == "my comment" and info["Author"] == "me"
    assert info["Config"]["Cmd"] == ["sh"]  # inherited from the parent image
    assert info["Config"]["Env"] == ["X=1", "PATH=/bin:/usr/bin"]
    assert info["Config"]["Labels"] == {"k": "v"}
    assert len(info["RootFS"]["Layers"]) == 2 and "LowerDir" in info["GraphDriver"]["Data"]
    top = store.layer_dirs(child)[0]
    assert os.lstat(os.path.join(top, "etc/group")).st_rdev == 0
    history = image_views.history(store, child)
    assert [h["Id"] for h in history] == [child, busybox]
    assert history[0]["CreatedBy"] == "sh -c touch" and history[0]["Tags"] == ["snap:v1"]
    short = busybox.removeprefix("sha256:")[:12]
    with pytest.raises(Conflict) as err:
        store.remove(busybox, force=True)
    assert err.value.message == (
        f"conflict: unable to delete {short} (cannot be forced) - image has dependent child images"
    )
    # Untagged parent is pruned together with its last child.
    store.remove("busybox")
    records = store.remove("snap:v1")
    deleted = [r["Deleted"] for r in records if "Deleted" in r]
    assert child in deleted and busybox in deleted
    assert os.listdir(store.paths.layers) == []


def test_commit_empty_upper_adds_no_layer(store: ImageStore, busybox: str, tmp_path: str) -> None:
    upper = os.path.join(tmp_path, "empty")
    os.makedirs(upper)
    child = store.commit(upper, busybox, {}, changes=['CMD ["true"]'])
    cfg = store.config(child)
    assert cfg["rootfs"]["diff_ids"] == store.config(busybox)["rootfs"]["diff_ids"]
    assert cfg["history"][-1]["empty_layer"] is True
    assert cfg["config"]["Cmd"] == ["true"]
