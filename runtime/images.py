"""The content-addressed image store: layers, images, tags, resolve, remove (with dockerd's
conflict rules), layer holds and commit.

Layout (docs/runtime.md): config JSON and uncompressed layer tars live as blobs named by
their sha256; each layer is unpacked once into `layers/<diffid-hex>/diff` (overlayfs-ready) and
shared by every image that lists its diff id. `repositories.json` maps familiar `name:tag` to image
ids. `imagedb.json` (ours) records which configs are images, their parent and last tag time.
"Holds" keep layers alive for containers whose image was force-removed; they live in memory and
the runtime re-takes them for every container it loads on start.

Built on this store's public methods: runtime/image_transfer.py (`docker import`, `load`,
`save`) and runtime/image_views.py (inspect, history and list in Docker's JSON).

Every public method takes one lock per data root: callers run the store from threads.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from proto.docker.errors import Conflict, NotFound, go_quote
from runtime import layers
from runtime.blobio import HashingWriter, canonical_json
from runtime.changes import apply_changes
from runtime.fileio import read_json, write_atomic
from runtime.imageconfig import (
    host_architecture,
    image_config_bytes,
    merge_config,
    normalize_config,
)
from runtime.paths import DataRoot
from runtime.references import HEX64, Reference, parse_reference, tag_target
from runtime.timefmt import now_ns, rfc3339nano

Users = Callable[[str], list[tuple[str, bool]]]

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()

# A leftover temp entry older than this is from a crash, not from an import still running.
_STALE_TMP_SECONDS = 3600


def _lock_for(path: str) -> threading.RLock:
    key = os.path.realpath(path)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


_CONFLICT_CHILD = 1
_CONFLICT_RUNNING = 2
_CONFLICT_REFERENCE = 4
_CONFLICT_STOPPED = 8
_CONFLICT_HARD = _CONFLICT_CHILD | _CONFLICT_RUNNING
_CONFLICT_SOFT = _CONFLICT_REFERENCE | _CONFLICT_STOPPED


def _no_users(_image_id: str) -> list[tuple[str, bool]]:
    return []


class ImageStore:
    def __init__(self, root: DataRoot | str) -> None:
        self.paths = root if isinstance(root, DataRoot) else DataRoot(root)
        self.paths.ensure()
        self._tmp = os.path.join(self.paths.images, "tmp")
        self._db_path = os.path.join(self.paths.images, "imagedb.json")
        os.makedirs(self._tmp, exist_ok=True)
        self.lock = _lock_for(self.paths.images)
        self._holds: dict[str, list[str]] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        with self.lock:
            self._clean_tmp()

    # ------------------------------------------------------------ index files

    def _clean_tmp(self) -> None:
        cutoff = time.time() - _STALE_TMP_SECONDS
        for name in os.listdir(self._tmp):
            path = os.path.join(self._tmp, name)
            if os.lstat(path).st_mtime >= cutoff:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)

    def _db(self) -> dict[str, Any]:
        db = read_json(self._db_path, {})
        db.setdefault("images", {})
        db.setdefault("holds", {})
        return db

    def _save_db(self, db: dict[str, Any]) -> None:
        write_atomic(self._db_path, canonical_json(db))

    def _repos(self) -> dict[str, str]:
        return read_json(self.paths.repositories, {})

    def _save_repos(self, repos: dict[str, str]) -> None:
        write_atomic(self.paths.repositories, canonical_json(dict(sorted(repos.items()))))

    def layer_root(self, diff_id: str) -> str:  # diff/, size, distribution.json (layer_sources)
        return os.path.join(self.paths.layers, diff_id.removeprefix("sha256:"))

    # ------------------------------------------------------------ public: building blocks
    # What makes images (commit below, image_transfer.py) is built on these.

    def blob_path(self, digest: str) -> str:
        """Where the blob (config JSON or uncompressed layer tar) named by `digest` is kept."""
        return os.path.join(self.paths.blobs, digest.removeprefix("sha256:"))

    def tmp_dir(self, prefix: str) -> str:
        """A scratch directory on the store's file system; the caller removes it."""
        return tempfile.mkdtemp(prefix=prefix, dir=self._tmp)

    def add_layer(self, prefix: str, fill: Callable[[str], str]) -> str:
        """Store one layer and return its diff id's hex; nothing is left behind on failure.

        `fill(path)` writes the uncompressed tar to a temp file and returns its sha256 hex, or
        raises to refuse it. A layer the store already has is kept and not unpacked again.
        """
        with self.lock:
            fd, tmp_blob = tempfile.mkstemp(prefix=prefix, dir=self._tmp)
            os.close(fd)
            try:
                diff_hex = fill(tmp_blob)
                self._store_layer(diff_hex, tmp_blob)
                return diff_hex
            except BaseException:
                if os.path.exists(tmp_blob):
                    os.unlink(tmp_blob)
                raise

    def has_layer(self, diff_id: str) -> bool:
        """Whether the layer is stored (blob and unpacked dir), so a load can skip it."""
        with self.lock:
            return os.path.isdir(self.layer_root(diff_id)) and os.path.exists(
                self.blob_path(diff_id)
            )

    def add_image(self, config_bytes: bytes, parent: str) -> str:
        """Record an image config (its layers already stored); returns the image id."""
        with self.lock:
            image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
            blob = self.blob_path(image_id)
            if not os.path.exists(blob):
                write_atomic(blob, config_bytes)
            db = self._db()
            entry = db["images"].setdefault(image_id, {"parent": parent, "last_tag_time": ""})
            if parent:
                entry["parent"] = parent
            self._save_db(db)
            return image_id

    def set_tag(self, image_id: str, key: str) -> None:
        """Point the familiar `name:tag` key at image_id (moving it from any other image)."""
        with self.lock:
            repos = self._repos()
            repos[key] = image_id
            self._save_repos(repos)
            db = self._db()
            if image_id in db["images"]:
                db["images"][image_id]["last_tag_time"] = rfc3339nano(now_ns())
                self._save_db(db)

    def add_repo_digest(self, image_id: str, key: str) -> None:
        """Record a familiar `name@sha256:…` the image was pulled by (its RepoDigests)."""
        with self.lock:
            db = self._db()
            entry = db["images"].get(image_id)
            if entry is None:
                return
            digests = entry.setdefault("digests", [])
            if key not in digests:
                digests.append(key)
                self._save_db(db)

    # ------------------------------------------------------------ public: reading
    # What shows or sends images (image_views.py, image_transfer.save) reads through these.

    def tags(self) -> dict[str, str]:
        """Every familiar `name:tag` and the image id it names."""
        with self.lock:
            return self._repos()

    def images(self) -> dict[str, dict[str, str]]:
        """Every stored image id with its record: `parent` and `last_tag_time`."""
        with self.lock:
            return self._db()["images"]

    def diff_ids(self, image_id: str) -> list[str]:
        """The layers of a stored image id (not a reference), bottom layer first."""
        with self.lock:
            rootfs = self.image_config(image_id).get("rootfs") or {}
            return list(rootfs.get("diff_ids") or [])

    def image_config(self, image_id: str) -> dict[str, Any]:
        """The config of a stored image id, cached: read it, never change it (see `config`)."""
        with self.lock:
            cached = self._configs.get(image_id)
            if cached is None:
                with open(self.blob_path(image_id), "rb") as f:
                    cached = json.load(f)
                self._configs[image_id] = cached
            return cached

    def repo_digests(self, image_id: str, images: dict[str, Any] | None = None) -> list[str]:
        """The familiar `name@sha256:…`s naming image_id, from `images` (see `images()`)."""
        with self.lock:
            images = self._db()["images"] if images is None else images
            return list(images.get(image_id, {}).get("digests") or [])

    def tags_of(self, image_id: str, repos: dict[str, str] | None = None) -> list[str]:
        """The familiar `name:tag`s naming image_id, from `repos` (see `tags()`) or read now."""
        repos = self._repos() if repos is None else repos
        return sorted(key for key, value in repos.items() if value == image_id)

    def children(self, image_id: str, images: dict[str, dict[str, str]]) -> list[str]:
        """The ids in `images` (see `images()`) whose parent is image_id."""
        return [i for i, meta in images.items() if meta.get("parent") == image_id]

    def layer_size(self, diff_id: str) -> int:
        """The unpacked size of a layer (0 if the store does not have it)."""
        try:
            with open(os.path.join(self.layer_root(diff_id), "size")) as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0

    # ------------------------------------------------------------ layers

    def _store_layer(self, diff_hex: str, tmp_blob: str) -> None:
        """Move a spooled layer tar into place and unpack it once (tmp dir, then rename)."""
        blob = self.blob_path(diff_hex)
        if os.path.exists(blob):
            os.unlink(tmp_blob)
        else:
            os.chmod(tmp_blob, 0o600)
            os.rename(tmp_blob, blob)
        self._ensure_layer_dir(diff_hex)

    def _ensure_layer_dir(self, diff_hex: str) -> None:
        final = self.layer_root(diff_hex)
        if os.path.isdir(final):
            return
        work = tempfile.mkdtemp(prefix="layer-", dir=self._tmp)
        try:
            os.chmod(work, 0o755)
            diff = os.path.join(work, "diff")
            os.mkdir(diff, 0o755)
            blob = self.blob_path(diff_hex)
            if os.path.getsize(blob) > 0:
                with open(blob, "rb") as f:
                    layers.unpack_layer(f, diff)
            with open(os.path.join(work, "size"), "w") as f:
                f.write(str(layers.dir_size(diff)))
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _used_layers(self, db: dict[str, Any]) -> set[str]:
        used: set[str] = set()
        for image_id in db["images"]:
            used.update(self.diff_ids(image_id))
        for held in self._holds.values():
            used.update(held)
        return used

    def _drop_layer(self, diff_id: str) -> None:
        root = self.layer_root(diff_id)
        if os.path.isdir(root):
            # Rename first so a half-deleted layer is never visible under its name.
            doomed = tempfile.mkdtemp(prefix="rm-", dir=self._tmp)
            os.rename(root, os.path.join(doomed, "layer"))
            shutil.rmtree(doomed, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.blob_path(diff_id))

    # ------------------------------------------------------------ public: lookup

    def resolve(self, ref: str) -> str:
        """The image id `ref` names: full/short id (with or without sha256:) or name[:tag]."""
        with self.lock:
            db = self._db()
            plain = ref.removeprefix("sha256:")
            if HEX64.fullmatch(plain):
                image_id = "sha256:" + plain
                if image_id in db["images"]:
                    return image_id
                raise NotFound(f"No such image: {image_id}")
            parsed = parse_reference(ref)
            if not parsed.digest:
                image_id = self._repos().get(parsed.tagged().familiar())
                if image_id is not None and image_id in db["images"]:
                    return image_id
            else:
                key = Reference(parsed.name, "", parsed.digest).familiar()
                for image_id, meta in db["images"].items():
                    if key in (meta.get("digests") or []):
                        return image_id
            if re.fullmatch(r"[a-f0-9]+", plain):
                matches = [i for i in db["images"] if i[len("sha256:") :].startswith(plain)]
                if len(matches) == 1:
                    return matches[0]
            raise NotFound(f"No such image: {parsed.tagged().familiar()}")

    def exists(self, ref: str) -> bool:
        try:
            self.resolve(ref)
        except NotFound:
            return False
        return True

    def config(self, image_id: str) -> dict[str, Any]:
        """The image config JSON (architecture, config, rootfs, history, ...)."""
        with self.lock:
            return copy.deepcopy(self.image_config(self.resolve(image_id)))

    def layer_dirs(self, image_id: str) -> list[str]:
        """The unpacked layer dirs, top layer first: ready for an overlay `lowerdir`."""
        with self.lock:
            diff_ids = self.diff_ids(self.resolve(image_id))
            return [os.path.join(self.layer_root(d), "diff") for d in reversed(diff_ids)]

    def size(self, image_id: str) -> int:
        with self.lock:
            return sum(self.layer_size(d) for d in self.diff_ids(self.resolve(image_id)))

    # ------------------------------------------------------------ public: tag

    def tag(self, ref: str, repo: str, tag: str = "") -> str:
        """Tag an image (POST /images/{name}/tag); returns the familiar `name:tag` (tag_target)."""
        with self.lock:
            image_id = self.resolve(ref)
            key = tag_target(repo, tag)
            self.set_tag(image_id, key)
            return key

    def untag(self, ref: str) -> str:
        """Remove one `name:tag` (no image deletion); returns the familiar form removed."""
        with self.lock:
            key = parse_reference(ref).tagged().familiar()
            repos = self._repos()
            if key not in repos:
                raise NotFound(f"No such image: {key}")
            del repos[key]
            self._save_repos(repos)
            return key

    # ------------------------------------------------------------ public: remove

    def remove(
        self,
        ref: str,
        force: bool = False,
        noprune: bool = False,
        users: Users | None = None,
    ) -> list[dict[str, str]]:
        """DELETE /images/{name} with dockerd's rules; returns Untagged/Deleted records."""
        users = users or _no_users
        with self.lock:
            image_id = self.resolve(ref)
            records: list[dict[str, str]] = []
            tags = self.tags_of(image_id)
            quiet = False
            if not _is_id_prefix(image_id, ref):
                if not force and len(tags) == 1:
                    using = users(image_id)
                    if using:
                        raise Conflict(
                            f"conflict: unable to remove repository reference {go_quote(ref)} "
                            f"(must force) - container {using[0][0][:12]} is using its "
                            f"referenced image {_short(image_id)}"
                        )
                parsed = parse_reference(ref)
                if parsed.digest:
                    key = Reference(parsed.name, "", parsed.digest).familiar()
                    self._drop_tags([key], records)
                else:
                    self._drop_tags([parsed.tagged().familiar()], records)
                    # dockerd: the last tag of a repository takes its digests along.
                    prefix = parsed.familiar_name()
                    if not any(t.rpartition(":")[0] == prefix for t in self.tags_of(image_id)):
                        same = [d for d in self.repo_digests(image_id) if d.split("@")[0] == prefix]
                        self._drop_tags(same, records)
                if self.tags_of(image_id) or self.repo_digests(image_id):
                    return records
                quiet = True
            elif len(tags) == 1:
                mask = _CONFLICT_HARD | (0 if force else _CONFLICT_STOPPED)
                conflict = self._conflict(image_id, mask, users)
                if conflict is not None:
                    raise conflict[0]
                self._drop_tags(tags, records)
            self._delete_helper(image_id, records, force, not noprune, quiet, users)
            return records

    def _drop_tags(self, keys: list[str], records: list[dict[str, str]]) -> None:
        """Untag `name:tag`s and `name@digest`s (the latter kept in the image's record)."""
        repos = self._repos()
        db = self._db()
        for key in keys:
            if "@" in key:
                for meta in db["images"].values():
                    if key in (meta.get("digests") or []):
                        meta["digests"].remove(key)
            else:
                repos.pop(key, None)
            records.append({"Untagged": key})
        self._save_repos(repos)
        self._save_db(db)

    def _conflict(self, image_id: str, mask: int, users: Users) -> tuple[Conflict, bool] | None:
        """Docker's checkImageDeleteConflict: (error, whether a container uses the image)."""
        short = _short(image_id)
        if mask & _CONFLICT_CHILD and self.children(image_id, self._db()["images"]):
            msg = "(cannot be forced) - image has dependent child images"
            return Conflict(f"conflict: unable to delete {short} {msg}"), False
        using = users(image_id)
        running = [c for c, is_running in using if is_running]
        if mask & _CONFLICT_RUNNING and running:
            msg = f"(cannot be forced) - image is being used by running container {running[0][:12]}"
            return Conflict(f"conflict: unable to delete {short} {msg}"), True
        if mask & _CONFLICT_REFERENCE and self.tags_of(image_id):
            msg = "(must be forced) - image is referenced in multiple repositories"
            return Conflict(f"conflict: unable to delete {short} {msg}"), False
        stopped = [c for c, is_running in using if not is_running]
        if mask & _CONFLICT_STOPPED and stopped:
            msg = f"(must be forced) - image is being used by stopped container {stopped[0][:12]}"
            return Conflict(f"conflict: unable to delete {short} {msg}"), True
        return None

    def _delete_helper(
        self,
        image_id: str,
        records: list[dict[str, str]],
        force: bool,
        prune: bool,
        quiet: bool,
        users: Users,
    ) -> None:
        mask = _CONFLICT_HARD | (0 if force else _CONFLICT_SOFT)
        conflict = self._conflict(image_id, mask, users)
        if conflict is not None:
            error, used = conflict
            if quiet and (not self._is_dangling(image_id) or used):
                return
            raise error
        db = self._db()
        parent = db["images"].get(image_id, {}).get("parent", "")
        tags = self.tags_of(image_id) + self.repo_digests(image_id)
        if tags:
            self._drop_tags(tags, records)
        removed = self._delete_image(image_id)
        records.append({"Deleted": image_id})
        records.extend({"Deleted": chain} for chain in removed)
        if prune and parent and parent in self._db()["images"]:
            self._delete_helper(parent, records, False, True, True, users)

    def _is_dangling(self, image_id: str) -> bool:
        return not self.tags_of(image_id) and not self.children(image_id, self._db()["images"])

    def _delete_image(self, image_id: str) -> list[str]:
        """Forget an image; drop layers nothing uses any more. Returns their chain ids."""
        diff_ids = self.diff_ids(image_id)
        chains = _chain_ids(diff_ids)
        db = self._db()
        db["images"].pop(image_id, None)
        self._save_db(db)
        used = self._used_layers(db)
        removed: list[str] = []
        for diff_id, chain in reversed(list(zip(diff_ids, chains, strict=True))):
            if diff_id not in used and os.path.exists(self.layer_root(diff_id)):
                self._drop_layer(diff_id)
                removed.append(chain)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.blob_path(image_id))
        self._configs.pop(image_id, None)
        return removed

    # ------------------------------------------------------------ public: holds

    def hold_diff_ids(self, owner: str, diff_ids: list[str]) -> None:
        """Keep these layers (present or still coming) for `owner`, e.g. a pull in progress, so
        no other failing pull or removal drops one under it; `release_layers` ends it."""
        with self.lock:
            self._holds[owner] = list(diff_ids)

    def hold_layers(self, owner: str, image_id: str) -> None:
        """Keep an image's layers alive for `owner` (a container) even if the image goes."""
        with self.lock:
            self._holds[owner] = self.diff_ids(self.resolve(image_id))

    def release_layers(self, owner: str) -> None:
        """Drop `owner`'s hold; layers no image or hold uses any more are deleted."""
        with self.lock:
            held = self._holds.pop(owner, [])
            used = self._used_layers(self._db())
            for diff_id in held:
                if diff_id not in used:
                    self._drop_layer(diff_id)

    # ------------------------------------------------------------ public: commit

    def commit(
        self,
        upper: str,
        parent_id: str | None,
        config: dict[str, Any],
        comment: str = "",
        author: str = "",
        reference: str | None = None,
        created_by: str = "",
        changes: list[str] | None = None,
        container_id: str = "",
    ) -> str:
        """A new image: the parent's layers plus one made from an overlay upper dir."""
        ref = parse_reference(reference) if reference else None
        with self.lock:
            parent = self.resolve(parent_id) if parent_id else ""
            parent_cfg = self.image_config(parent) if parent else {}
            container_config = normalize_config(config)
            new_config = merge_config(container_config, parent_cfg.get("config") or {})
            if changes:
                new_config = apply_changes(new_config, changes)
            diff_ids = list((parent_cfg.get("rootfs") or {}).get("diff_ids") or [])
            empty = not os.listdir(upper)
            if not empty:
                diff_ids.append("sha256:" + self.add_layer("commit-", tar_upper_fill(upper)))
            created = rfc3339nano(now_ns())
            entry: dict[str, Any] = {"created": created}
            if author:
                entry["author"] = author
            entry["created_by"] = created_by or " ".join(container_config.get("Cmd") or [])
            if comment:
                entry["comment"] = comment
            if empty:
                entry["empty_layer"] = True
            history = [*(parent_cfg.get("history") or []), entry]
            extra = {
                "author": author,
                "comment": comment,
                "container": container_id,
                "container_config": container_config,
                "parent": parent,
                "architecture": parent_cfg.get("architecture") or host_architecture(),
                "os": parent_cfg.get("os") or "linux",
                "variant": parent_cfg.get("variant", ""),
            }
            data = image_config_bytes(new_config, diff_ids, history, created, extra)
            image_id = self.add_image(data, parent)
            if ref is not None:
                self.set_tag(image_id, ref.tagged().familiar())
            return image_id


def tar_upper_fill(upper: str) -> Callable[[str], str]:
    """An `add_layer` fill: the layer tar of an overlay upper dir (whiteouts in Docker's form)."""

    def fill(path: str) -> str:
        with open(path, "wb") as f:
            writer = HashingWriter(f)
            layers.tar_layer_from_upper(upper, writer)  # type: ignore[arg-type]
        return writer.digest.hexdigest()

    return fill


def _chain_ids(diff_ids: list[str]) -> list[str]:
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            text = f"{chains[-1]} {diff_id}".encode()
            chains.append("sha256:" + hashlib.sha256(text).hexdigest())
    return chains


def _is_id_prefix(image_id: str, ref: str) -> bool:
    return image_id.startswith(ref) or image_id.removeprefix("sha256:").startswith(ref)
