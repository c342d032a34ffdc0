"""Named volumes with Docker's `local` driver: `<root>/volumes/<name>/_data` + `opts.json`.

`opts.json` holds everything Docker keeps about a volume (driver, labels, driver options, creation
time). Volumes with `type`/`device` options (tmpfs, bind, nfs, ...) are mounted on `_data` the
first time they are used and unmounted when removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from proto.docker.errors import Conflict, InvalidParameter, NotFound, SystemError_
from runtime import mounts
from runtime.fileio import write_atomic
from runtime.inroot import open_in_root
from runtime.paths import DataRoot

DATA_DIR = "_data"
OPTS_FILE = "opts.json"
_VALID_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_VALID_OPTS = ("type", "o", "device", "size")
_MANDATORY_OPTS = {"device": ("type",), "type": ("device",), "o": ("device", "type")}

# mount(8)-style words in `o=` that are flags rather than filesystem data.
_MS_FLAGS = {
    "ro": 1,
    "rw": 0,
    "nosuid": 2,
    "nodev": 4,
    "noexec": 8,
    "sync": 16,
    "remount": 32,
    "mand": 64,
    "dirsync": 128,
    "noatime": 1024,
    "nodiratime": 2048,
    "bind": 4096,
    "rbind": 4096 | 16384,
    "relatime": 1 << 21,
    "strictatime": 1 << 24,
}


class VolumeStore:
    """The node's named volumes. Thread-safe; metadata lives on disk only."""

    def __init__(self, root: DataRoot) -> None:
        self.root = root
        self._lock = threading.Lock()
        os.makedirs(root.volumes, 0o700, exist_ok=True)

    # ------------------------------------------------------------ paths

    def _dir(self, name: str) -> str:
        return os.path.join(self.root.volumes, name)

    def mountpoint(self, name: str) -> str:
        """Host path of the volume's data (what `Mountpoint` shows)."""
        return os.path.join(self.root.volumes, name, DATA_DIR)

    # ------------------------------------------------------------ create / inspect

    def create(
        self,
        name: str | None = None,
        driver: str = "local",
        driver_opts: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """`POST /volumes/create`. An existing name returns that volume unchanged, like Docker."""
        name = name or secrets.token_hex(32)
        check_driver(name, driver)
        with self._lock:
            existing = self._load(name)
            if existing is not None:
                return self._view(existing)
            _validate_name(name)
            opts = dict(driver_opts or {})
            _validate_opts(name, opts)
            meta = {
                "Name": name,
                "Driver": "local",
                "Labels": dict(labels or {}),
                "Options": opts,
                "CreatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            os.makedirs(self.mountpoint(name), 0o755)
            self._save(meta)
            return self._view(meta)

    def inspect(self, name: str) -> dict[str, Any]:
        """`GET /volumes/{name}`; missing → 404 `get {name}: no such volume`."""
        with self._lock:
            return self._view(self._get(name))

    def exists(self, name: str) -> bool:
        with self._lock:
            return self._load(name) is not None

    def list_volumes(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        """`GET /volumes` entries (sorted by name); filters `name`, `driver`, `label`."""
        with self._lock:
            metas = [m for m in (self._load(n) for n in self._names()) if m is not None]
        views = [self._view(m) for m in metas]
        return [v for v in views if _matches(v, filters or {})]

    def _names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root.volumes))
        except FileNotFoundError:
            return []

    def _view(self, meta: dict[str, Any]) -> dict[str, Any]:
        # Key order and shape as dockerd's volume inspect.
        return {
            "CreatedAt": meta["CreatedAt"],
            "Driver": meta["Driver"],
            "Labels": meta["Labels"],
            "Mountpoint": self.mountpoint(meta["Name"]),
            "Name": meta["Name"],
            "Options": meta["Options"],
            "Scope": "local",
        }

    # ------------------------------------------------------------ remove / prune

    def remove(self, name: str, force: bool = False, in_use: Iterable[str] = ()) -> None:
        """`DELETE /volumes/{name}`. `in_use` = ids of containers using it (→ 409 even with force,
        as in dockerd). `force` only makes a missing volume not an error."""
        refs = list(in_use)
        with self._lock:
            meta = self._load(name)
            if meta is None:
                if force:
                    return
                raise _no_such_volume(name)
            if refs:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(refs)}]")
            self._destroy(name, meta)

    def prune(
        self, in_use: Iterable[str] = (), filters: dict[str, list[str]] | None = None
    ) -> dict[str, Any]:
        """`POST /volumes/prune` (API 1.41: every unused volume); `in_use` = volume names in use."""
        used = set(in_use)
        deleted: list[str] = []
        reclaimed = 0
        with self._lock:
            for name in self._names():
                meta = self._load(name)
                if meta is None or name in used or not _label_filters_match(meta, filters or {}):
                    continue
                reclaimed += _du(self.mountpoint(name))
                self._destroy(name, meta)
                deleted.append(name)
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def _destroy(self, name: str, meta: dict[str, Any]) -> None:
        if _needs_mount(meta["Options"]):
            _unmount(self.mountpoint(name))
        elif os.path.ismount(self.mountpoint(name)):
            raise SystemError_(f"remove {name}: volume data is still mounted")
        shutil.rmtree(self._dir(name))

    # ------------------------------------------------------------ use

    def mount(self, name: str) -> str:
        """Ready the volume for a container and return its host path. Volumes with `type`/`device`
        options are mounted on first use; plain ones are just the directory."""
        with self._lock:
            meta = self._get(name)
            path = self.mountpoint(name)
            opts = meta["Options"]
            if _needs_mount(opts) and not os.path.ismount(path):
                _mount(name, opts, path)
            return path

    def unmount(self, name: str) -> None:
        """Undo mount() for a mounted-type volume (call when no container uses it any more)."""
        with self._lock:
            meta = self._get(name)
            if _needs_mount(meta["Options"]):
                _unmount(self.mountpoint(name))

    def is_empty(self, name: str) -> bool:
        return not os.listdir(self.mountpoint(name))

    def copy_up(self, name: str, root: str, path: str) -> bool:
        """Copy the directory at `path` of a container's root filesystem `root` into the volume
        if the volume is empty (dockerd does this when an empty volume is first mounted over a
        non-empty image path). `path` is looked up inside `root` (runtime/inroot.py): a symlink
        on the way, absolute or relative, resolves within the image and never onto the host.
        Ownership, modes, timestamps, symlinks (as symlinks, never followed), hard links, device
        nodes and xattrs are preserved, and the volume root takes the ownership and mode of the
        source. Returns whether anything was copied."""
        dest = self.mount(name)
        with self._lock:
            root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                # A link as the last component is followed too, inside the root, as dockerd does.
                src_fd = open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
            except (FileNotFoundError, NotADirectoryError):
                return False
            finally:
                os.close(root_fd)
            try:
                dest_fd = os.open(dest, _DIR_FLAGS)
                try:
                    if os.listdir(dest_fd):
                        return False
                    _copy_tree(src_fd, dest_fd)
                    return True
                finally:
                    os.close(dest_fd)
            finally:
                os.close(src_fd)

    # ------------------------------------------------------------ metadata

    def _get(self, name: str) -> dict[str, Any]:
        meta = self._load(name)
        if meta is None:
            raise _no_such_volume(name)
        return meta

    def _load(self, name: str) -> dict[str, Any] | None:
        if not name or "/" in name or name in (".", ".."):
            return None
        try:
            with open(os.path.join(self._dir(name), OPTS_FILE)) as f:
                return json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _save(self, meta: dict[str, Any]) -> None:
        write_atomic(os.path.join(self._dir(meta["Name"]), OPTS_FILE), json.dumps(meta).encode())


# ---------------------------------------------------------------- validation


def check_driver(name: str, driver: str) -> None:
    """Only the built-in `local` driver exists (no volume plugins): dockerd's lookup error."""
    if driver and driver != "local":
        raise NotFound(
            f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" not found'
        )


def _no_such_volume(name: str) -> NotFound:
    return NotFound(f"get {name}: no such volume")


def _validate_name(name: str) -> None:
    if len(name) == 1:
        raise InvalidParameter(
            f"create {name}: volume name is too short, names should be at least two "
            "alphanumeric characters"
        )
    if not _VALID_NAME.match(name):
        raise InvalidParameter(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            f'only "{_NAME_CHARS}" are allowed. If you intended to pass a host directory, '
            "use absolute path"
        )


def _validate_opts(name: str, opts: dict[str, str]) -> None:
    for key in opts:
        if key not in _VALID_OPTS:
            raise InvalidParameter(f'create {name}: invalid option: "{key}"')
    if opts.get("size"):
        raise InvalidParameter(f"create {name}: quota size requested but no quota support")
    for key, required in _MANDATORY_OPTS.items():
        if key not in opts:
            continue
        for req in required:
            if req not in opts:
                raise InvalidParameter(f'create {name}: missing required option: "{req}"')


def _matches(view: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    names = filters.get("name")
    if names and not any(n in view["Name"] for n in names):
        return False
    drivers = filters.get("driver")
    if drivers and view["Driver"] not in drivers:
        return False
    return _label_filters_match(view, filters)


def _label_filters_match(meta: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    labels = meta.get("Labels") or {}
    for expr in filters.get("label", []):
        key, eq, value = expr.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    for expr in filters.get("label!", []):
        key, eq, value = expr.partition("=")
        if key in labels and (not eq or labels[key] == value):
            return False
    return True


def _du(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


# ---------------------------------------------------------------- mounting


def _needs_mount(opts: dict[str, str]) -> bool:
    return bool(opts.get("type") or opts.get("device"))


def _split_mount_opts(o: str) -> tuple[int, str]:
    flags = 0
    data: list[str] = []
    for word in filter(None, o.split(",")):
        if word in _MS_FLAGS:
            flags |= _MS_FLAGS[word]
        else:
            data.append(word)
    return flags, ",".join(data)


def _mount(name: str, opts: dict[str, str], target: str) -> None:
    flags, data = _split_mount_opts(opts.get("o", ""))
    device, fstype = opts.get("device", ""), opts.get("type", "")
    try:
        mounts.mount(device, target, fstype, flags, data)
    except OSError as e:
        raise SystemError_(
            f"error while mounting volume '{target}': failed to mount local volume: "
            f"mount {device}:{target}, flags: {hex(flags)}, data: {data}: "
            f"{os.strerror(e.errno or 0).lower()}"
        ) from None


def _unmount(target: str) -> None:
    if not os.path.ismount(target):
        return
    try:
        mounts.unmount(target)
    except OSError as e:
        raise SystemError_(f"unmount {target}: {os.strerror(e.errno or 0).lower()}") from None


# ---------------------------------------------------------------- copy-up


# Every step is relative to a directory fd and refuses to follow a symlink, on both sides: the
# image's tree is the container's to shape, and the volume may be in use by a running container.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _copy_tree(src_fd: int, dest_fd: int) -> None:
    links: dict[tuple[int, int], int] = {}  # (dev, ino) of a hard-linked file → its copy (O_PATH)
    try:
        _copy_dir(src_fd, dest_fd, links)
    finally:
        for fd in links.values():
            os.close(fd)
    _copy_fd_meta(src_fd, dest_fd, os.fstat(src_fd))


def _copy_dir(src_fd: int, dest_fd: int, links: dict[tuple[int, int], int]) -> None:
    for name in os.listdir(src_fd):
        st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dest_fd)
            sub_src = os.open(name, _DIR_FLAGS, dir_fd=src_fd)
            try:
                sub_dest = os.open(name, _DIR_FLAGS, dir_fd=dest_fd)
                try:
                    _copy_dir(sub_src, sub_dest, links)
                    # Last: filling it in changed its mtime.
                    _copy_fd_meta(sub_src, sub_dest, st)
                finally:
                    os.close(sub_dest)
            finally:
                os.close(sub_src)
            continue
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            os.link(f"/proc/self/fd/{links[key]}", name, dst_dir_fd=dest_fd, follow_symlinks=True)
            continue
        if stat.S_ISREG(mode):
            _copy_file(src_fd, dest_fd, name, st)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dest_fd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dest_fd, follow_symlinks=False)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dest_fd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dest_fd, follow_symlinks=False)
            node = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dest_fd)
            try:
                os.chmod(f"/proc/self/fd/{node}", stat.S_IMODE(mode))
            finally:
                os.close(node)
        else:  # sockets are not copied
            continue
        if not stat.S_ISLNK(mode) and not stat.S_ISREG(mode):
            _copy_xattrs(f"/proc/self/fd/{src_fd}/{name}", f"/proc/self/fd/{dest_fd}/{name}")
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dest_fd, follow_symlinks=False)
        if st.st_nlink > 1:
            links[key] = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dest_fd)


def _copy_file(src_fd: int, dest_fd: int, name: str, st: os.stat_result) -> None:
    fin = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fout = os.open(name, flags, 0o600, dir_fd=dest_fd)
        try:
            while os.sendfile(fout, fin, None, 1 << 20) > 0:
                pass
            _copy_fd_meta(fin, fout, st)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_fd_meta(src: int, dest: int, st: os.stat_result) -> None:
    # chown before chmod: chown clears the setuid/setgid bits.
    os.fchown(dest, st.st_uid, st.st_gid)
    os.fchmod(dest, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src, dest)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_xattrs(src: int | str, dest: int | str) -> None:
    """Between two fds, or two paths whose last component is not followed."""
    follow = isinstance(src, int)  # an fd cannot be combined with follow_symlinks=False
    try:
        names = os.listxattr(src, follow_symlinks=follow)
    except OSError:
        return
    for key in names:
        with contextlib.suppress(OSError):
            value = os.getxattr(src, key, follow_symlinks=follow)
            os.setxattr(dest, key, value, follow_symlinks=follow)
