"""Images in and out of an ImageStore: `docker import` (a tarball as one layer), `docker load`
(docker-save archives and OCI layouts) and `docker save`, as functions over the store.

Each holds the store's lock for the whole transfer and builds on its public methods
(`add_layer`, `add_image`, `set_tag`, …), so a half-made transfer leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import time
from typing import Any, BinaryIO

from proto.docker.errors import InvalidParameter, NotFound, go_quote
from runtime import inroot, layers
from runtime.blobio import canonical_json, decompressed, spool
from runtime.changes import apply_changes
from runtime.imageconfig import host_architecture, image_config_bytes, normalize_config
from runtime.images import ImageStore
from runtime.references import parse_reference
from runtime.timefmt import ZERO_TIME, now_ns, rfc3339nano


def import_tarball(
    store: ImageStore,
    src: BinaryIO,
    reference: str | None = None,
    changes: list[str] | None = None,
    message: str = "",
    platform_os: str = "linux",
) -> str:
    """`docker import`: one layer from a (possibly compressed) tar; returns the image id."""
    ref = parse_reference(reference) if reference else None
    if ref is not None and ref.digest:
        raise InvalidParameter("cannot import digest reference")
    if platform_os != "linux":
        raise InvalidParameter("operating system is not supported")
    container_config = apply_changes({}, changes or [])
    with store.lock:
        diff_hex = store.add_layer("import-", lambda path: spool(src, path))
        created = rfc3339nano(now_ns())
        entry = {"created": created, **({"comment": message} if message else {})}
        data = image_config_bytes(
            container_config,
            ["sha256:" + diff_hex],
            [entry],
            created,
            {"comment": message, "os": platform_os},
        )
        image_id = store.add_image(data, "")
        if ref is not None:
            store.set_tag(image_id, ref.tagged().familiar())
        return image_id


def load(store: ImageStore, src: BinaryIO) -> list[str]:
    """`docker load` of a docker-save archive or an OCI layout; returns Docker's lines."""
    with store.lock:
        work = store.tmp_dir("docker-import-")
        try:
            layers.unpack_layer(decompressed(src), work)
            if _exists_inside(work, "manifest.json"):
                entries = _docker_manifest(work)
            elif _exists_inside(work, "index.json"):
                entries = _oci_manifests(work)
            else:
                raise InvalidParameter(f"open {work}/repositories: no such file or directory")
            lines: list[str] = []
            for config_path, layer_paths, tags in entries:
                lines += _load_one(store, work, config_path, layer_paths, tags)
            return lines
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _load_one(
    store: ImageStore, work: str, config_path: str, layer_paths: list[str], tags: list[str]
) -> list[str]:
    with _inside(work, config_path) as f:
        config_bytes = f.read()
    try:
        cfg = json.loads(config_bytes)
        diff_ids = list(cfg["rootfs"]["diff_ids"] or [])
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidParameter(f"invalid image config {config_path}: {e}") from e
    if len(diff_ids) != len(layer_paths):
        raise InvalidParameter(
            "invalid manifest, layers length mismatch: "
            f"expected {len(diff_ids)}, got {len(layer_paths)}"
        )
    refs = [parse_reference(t).tagged() for t in tags]
    for index, (diff_id, path) in enumerate(zip(diff_ids, layer_paths, strict=True)):
        if store.has_layer(diff_id):
            continue  # shared with an image we already have: not unpacked twice
        _load_layer(store, work, index, diff_id, path)
    image_id = store.add_image(config_bytes, "")
    lines: list[str] = []
    repos = store.tags()
    for ref in refs:
        key = ref.familiar()
        old = repos.get(key)
        if old and old != image_id:
            lines.append(
                f"The image {key} already exists, renaming the old one with ID {old} "
                "to empty string"
            )
        store.set_tag(image_id, key)
        lines.append(f"Loaded image: {key}")
    if not refs:
        lines.append(f"Loaded image ID: {image_id}")
    return lines


def _load_layer(store: ImageStore, work: str, index: int, diff_id: str, path: str) -> None:
    def fill(tmp_blob: str) -> str:
        with _inside(work, path) as f:
            got = spool(f, tmp_blob)
        if "sha256:" + got != diff_id:
            raise InvalidParameter(
                f"invalid diffID for layer {index}: expected {go_quote(diff_id)}, "
                f'got "sha256:{got}"'
            )
        return got

    store.add_layer("load-", fill)


def save(store: ImageStore, refs: list[str], dst: BinaryIO) -> None:
    """`docker save`: manifest.json, repositories, `<id>.json`, `<v1id>/layer.tar`."""
    with store.lock:
        wanted = _save_targets(store, refs)
        files: dict[str, bytes | str] = {}
        manifest: list[dict[str, Any]] = []
        repositories: dict[str, dict[str, str]] = {}
        for image_id, tags in wanted.items():
            manifest.append(_save_image(store, image_id, tags, files, repositories))
        files["manifest.json"] = canonical_json(manifest)
        if repositories:
            files["repositories"] = canonical_json(repositories)
        with tarfile.open(fileobj=dst, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _write_files(tar, files)


def _save_targets(store: ImageStore, refs: list[str]) -> dict[str, list[str]]:
    wanted: dict[str, list[str]] = {}
    repos = store.tags()
    for ref in refs:
        plain = ref.removeprefix("sha256:")
        if re.fullmatch(r"[a-f0-9]+", plain) and _is_id_prefix_any(plain, store.images()):
            wanted.setdefault(store.resolve(ref), [])
            continue
        parsed = parse_reference(ref)
        if parsed.tag:
            key = parsed.familiar()
            keys = [key] if key in repos else []
        else:
            prefix = parsed.familiar_name() + ":"
            keys = sorted(k for k in repos if k.startswith(prefix))
        if not keys:
            raise NotFound("reference does not exist")
        for key in keys:
            tags = wanted.setdefault(repos[key], [])
            if key not in tags:
                tags.append(key)
    return wanted


def _save_image(
    store: ImageStore,
    image_id: str,
    tags: list[str],
    files: dict[str, bytes | str],
    repositories: dict[str, dict[str, str]],
) -> dict[str, Any]:
    hex_id = image_id.removeprefix("sha256:")
    with open(store.blob_path(image_id), "rb") as f:
        files[f"{hex_id}.json"] = f.read()
    layer_names: list[str] = []
    parent_v1 = ""
    for diff_id in store.diff_ids(image_id):
        v1 = hashlib.sha256(f"{parent_v1}\n{diff_id}".encode()).hexdigest()
        v1_json: dict[str, Any] = {"id": v1}
        if parent_v1:
            v1_json["parent"] = parent_v1
        v1_json["created"] = ZERO_TIME
        v1_json["container_config"] = normalize_config(None)
        v1_json["os"] = "linux"
        files[f"{v1}/VERSION"] = b"1.0"
        files[f"{v1}/json"] = canonical_json(v1_json)
        files[f"{v1}/layer.tar"] = store.blob_path(diff_id)
        layer_names.append(f"{v1}/layer.tar")
        parent_v1 = v1
    for key in tags:
        name, _, tag = key.rpartition(":")
        repositories.setdefault(name, {})[tag] = parent_v1
    return {"Config": f"{hex_id}.json", "RepoTags": tags or None, "Layers": layer_names}


# --------------------------------------------------------------------------- helpers


def _inside(root: str, rel: str) -> BinaryIO:
    """The regular file rel under the unpacked archive, its symlinks followed inside it (as
    dockerd's safePath scopes them): a `manifest.json -> /etc/shadow` reads nothing of the host."""
    try:
        with inroot.opened(inroot.open_root(root)) as rootfd:
            fd = inroot.open_in_root(rootfd, rel, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        raise InvalidParameter(f"open {rel}: no such file or directory") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise InvalidParameter(f"open {rel}: no such file or directory")
    return f


def _exists_inside(root: str, rel: str) -> bool:
    try:
        _inside(root, rel).close()
    except InvalidParameter:
        return False
    return True


def _docker_manifest(work: str) -> list[tuple[str, list[str], list[str]]]:
    try:
        with _inside(work, "manifest.json") as f:
            manifest = json.load(f)
        return [
            (m["Config"], list(m.get("Layers") or []), list(m.get("RepoTags") or []))
            for m in manifest
        ]
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidParameter(f"invalid manifest.json: {e}") from e


def _blob_path(descriptor: dict[str, Any]) -> str:
    algorithm, _, hex_digest = str(descriptor.get("digest", "")).partition(":")
    if not re.fullmatch(r"[a-z0-9]+", algorithm) or not re.fullmatch(r"[a-f0-9]+", hex_digest):
        raise InvalidParameter(f"invalid digest {go_quote(str(descriptor.get('digest')))}")
    return f"blobs/{algorithm}/{hex_digest}"


def _read_blob_json(work: str, descriptor: dict[str, Any]) -> dict[str, Any]:
    with _inside(work, _blob_path(descriptor)) as f:
        return json.load(f)


def _oci_manifests(work: str) -> list[tuple[str, list[str], list[str]]]:
    try:
        with _inside(work, "index.json") as f:
            index = json.load(f)
        entries = []
        for desc in index.get("manifests") or []:
            manifest, desc = _pick_manifest(work, desc)
            annotations = desc.get("annotations") or {}
            name = annotations.get("io.containerd.image.name", "")
            ref_name = annotations.get("org.opencontainers.image.ref.name", "")
            if not name and (":" in ref_name or "/" in ref_name):
                name = ref_name
            config = _blob_path(manifest["config"])
            layer_paths = [_blob_path(layer) for layer in manifest.get("layers") or []]
            entries.append((config, layer_paths, [name] if name else []))
        return entries
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidParameter(f"invalid OCI layout: {e}") from e


def _pick_manifest(work: str, desc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Follow nested indexes to the manifest for this host's platform (or the first one)."""
    doc = _read_blob_json(work, desc)
    while "manifests" in doc:
        options = doc["manifests"]
        arch = host_architecture()
        chosen = next(
            (m for m in options if (m.get("platform") or {}).get("architecture") == arch),
            options[0],
        )
        chosen = {**chosen, "annotations": desc.get("annotations") or chosen.get("annotations")}
        desc, doc = chosen, _read_blob_json(work, chosen)
    return doc, desc


def _write_files(tar: tarfile.TarFile, files: dict[str, bytes | str]) -> None:
    """Write save-archive entries in name order; a str value is a host file to copy in."""
    dirs_done: set[str] = set()
    mtime = int(time.time())
    for name in sorted(files):
        parent = os.path.dirname(name)
        if parent and parent not in dirs_done:
            info = tarfile.TarInfo(parent)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = mtime
            tar.addfile(info)
            dirs_done.add(parent)
        value = files[name]
        info = tarfile.TarInfo(name)
        info.mode = 0o644
        info.mtime = mtime
        if isinstance(value, bytes):
            info.size = len(value)
            tar.addfile(info, io.BytesIO(value))
        else:
            info.size = os.path.getsize(value)
            with open(value, "rb") as f:
                tar.addfile(info, f)


def _is_id_prefix_any(plain: str, images: dict[str, Any]) -> bool:
    return any(i.removeprefix("sha256:").startswith(plain) for i in images)
