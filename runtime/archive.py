"""Copying files in and out of a container: `docker cp` (GET/HEAD/PUT archive) and `docker export`.

Every function takes `root`, the container's root as the host sees it (`/proc/<pid>/root` for a
running container, a mounted overlay for a stopped one). Container paths are resolved by hand,
component by component, so symlinks inside the container are interpreted relative to `root` and a
malicious image cannot make us read or write host files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tarfile
from collections import deque
from typing import Any, BinaryIO

from proto.docker.errors import InvalidParameter, NotFound, SystemError_
from runtime.timefmt import rfc3339nano

# Linux allows 40 symlinks in one lookup; past that the path is a loop.
_MAX_SYMLINKS = 40

# Go's os.FileMode type bits (io/fs): the stat header carries the mode in this encoding.
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20

_TAR_FORMAT = tarfile.PAX_FORMAT
_XATTR_PREFIX = "SCHILY.xattr."


# ---------------------------------------------------------------- path resolution


def resolve_in_root(root: str, path: str, follow_last: bool = True) -> str:
    """Host path of container `path`, following symlinks as the container would see them.

    Absolute link targets restart at `root` and `..` never climbs above it, so the result always
    lies inside `root`. Components that do not exist are appended as they are.
    """
    root = os.path.abspath(root)
    pending = deque(_components(path))
    resolved: list[str] = []
    links = 0
    while pending:
        comp = pending.popleft()
        if comp == "..":
            if resolved:
                resolved.pop()
            continue
        if not pending and not follow_last:
            resolved.append(comp)
            break
        host = os.path.join(root, *resolved, comp)
        try:
            st = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(comp)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(comp)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise SystemError_(f"lstat {path}: too many levels of symbolic links")
        target = os.readlink(host)
        if target.startswith("/"):
            resolved = []
        pending.extendleft(reversed(_components(target)))
    return os.path.join(root, *resolved)


def _components(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _abs_container_path(path: str) -> str:
    """Docker's PreserveTrailingDotOrSeparator(Join("/", path), path): the trailing "/" or "/."
    matters, it means "the directory itself, following a symlink" / "the directory's contents".
    """
    clean = os.path.normpath("/" + path)
    if clean == "//":
        clean = "/"
    if path.endswith("/.") or path == ".":
        return clean.rstrip("/") + "/."
    if path.endswith("/") and clean != "/":
        return clean + "/"
    return clean


def _follows_last(abs_path: str) -> bool:
    # The kernel follows a symlink named with a trailing slash; Docker's Lstat inherits that.
    return abs_path.endswith("/") or abs_path.endswith("/.")


def _host_path(root: str, abs_path: str) -> str:
    return resolve_in_root(root, abs_path, follow_last=_follows_last(abs_path))


def _not_found(path: str, container: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {container}")


# ---------------------------------------------------------------- stat


def go_file_mode(st_mode: int) -> int:
    """Translate a Linux st_mode into Go's os.FileMode bits (as os.Lstat reports them)."""
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFDIR:
        mode |= GO_MODE_DIR
    elif kind == stat.S_IFLNK:
        mode |= GO_MODE_SYMLINK
    elif kind == stat.S_IFBLK:
        mode |= GO_MODE_DEVICE
    elif kind == stat.S_IFCHR:
        mode |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE
    elif kind == stat.S_IFIFO:
        mode |= GO_MODE_NAMED_PIPE
    elif kind == stat.S_IFSOCK:
        mode |= GO_MODE_SOCKET
    if st_mode & stat.S_ISUID:
        mode |= GO_MODE_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_MODE_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_MODE_STICKY
    return mode


def _base_name(abs_path: str) -> str:
    # Go's filepath.Base: "/" stays "/", "/a/." gives ".", "/a/" gives "a".
    if abs_path == "/":
        return "/"
    return os.path.basename(abs_path.rstrip("/"))


def _lstat(host: str, abs_path: str, path: str, container: str) -> os.stat_result:
    try:
        st = os.lstat(host)
    except FileNotFoundError:
        raise _not_found(path, container) from None
    except NotADirectoryError:
        st = None
    # A trailing "/" on a non-directory is ENOTDIR for the kernel (and so for Docker).
    if st is None or (_follows_last(abs_path) and not stat.S_ISDIR(st.st_mode)):
        raise SystemError_(f"lstat {abs_path}: not a directory")
    return st


def stat_path(root: str, path: str, container: str = "") -> dict[str, Any]:
    """Docker's ContainerPathStat for `path` (the `X-Docker-Container-Path-Stat` object).

    `container` is the name or id the user gave; it only appears in the not-found message.
    """
    abs_path = _abs_container_path(path)
    host = _host_path(root, abs_path)
    st = _lstat(host, abs_path, path, container)
    link_target = ""
    if stat.S_ISLNK(st.st_mode):
        # Docker reports where the link finally leads, as an absolute container path.
        final = resolve_in_root(root, abs_path, follow_last=True)
        rel = os.path.relpath(final, os.path.abspath(root))
        link_target = "/" if rel == "." else "/" + rel
    return {
        "name": _base_name(abs_path),
        "size": st.st_size,
        "mode": go_file_mode(st.st_mode),
        "mtime": rfc3339nano(st.st_mtime_ns),
        "linkTarget": link_target,
    }


# ---------------------------------------------------------------- writing tars


def _tar_info(tar: tarfile.TarFile, host: str, arcname: str) -> tarfile.TarInfo | None:
    info = tar.gettarinfo(host, arcname)
    if info is None:  # sockets: Docker skips them too
        return None
    # Docker writes numeric ids only: host user names mean nothing inside the container.
    info.uname = ""
    info.gname = ""
    info.mtime = int(info.mtime)
    for key, value in _read_xattrs(host).items():
        info.pax_headers[_XATTR_PREFIX + key] = value.decode("utf-8", "surrogateescape")
    return info


def _read_xattrs(host: str) -> dict[str, bytes]:
    # Docker archives security.capability only (file capabilities, e.g. ping's cap_net_raw).
    try:
        return {
            "security.capability": os.getxattr(host, "security.capability", follow_symlinks=False)
        }
    except OSError:
        return {}


def _add_tree(tar: tarfile.TarFile, host: str, arcname: str) -> None:
    info = _tar_info(tar, host, arcname)
    if info is None:
        return
    if info.isreg():
        with open(host, "rb") as f:
            tar.addfile(info, f)
        return
    tar.addfile(info)
    if info.isdir():
        for name in sorted(os.listdir(host)):
            _add_tree(tar, os.path.join(host, name), f"{arcname}/{name}")


def _add_children(tar: tarfile.TarFile, host_dir: str, prefix: str) -> None:
    for name in sorted(os.listdir(host_dir)):
        _add_tree(tar, os.path.join(host_dir, name), prefix + name)


def get_archive(root: str, path: str, out: BinaryIO, container: str = "") -> dict[str, Any]:
    """Write a tar of container `path` to `out` and return its stat.

    Like Docker, the top entry is the path's basename; a path ending in "/." (or "/") archives
    the directory as "." so the client copies its contents.
    """
    st = stat_path(root, path, container)
    abs_path = _abs_container_path(path)
    host = _host_path(root, abs_path)
    with tarfile.open(fileobj=out, mode="w|", format=_TAR_FORMAT) as tar:
        if abs_path == "/" or abs_path.endswith("/."):
            info = _tar_info(tar, host, ".")
            if info is not None:
                tar.addfile(info)
            _add_children(tar, host, "./")
        else:
            _add_tree(tar, host, _base_name(abs_path))
    return st


def export_tree(root: str, out: BinaryIO) -> None:
    """`docker export`: a tar of the whole root filesystem, entries relative without "./"."""
    with tarfile.open(fileobj=out, mode="w|", format=_TAR_FORMAT) as tar:
        _add_children(tar, os.path.abspath(root), "")


# ---------------------------------------------------------------- extracting tars


def put_archive(
    root: str,
    path: str,
    src: BinaryIO,
    no_overwrite_dir_non_dir: bool = False,
    container: str = "",
    chown_to: tuple[int, int] | None = None,
) -> None:
    """Extract the tar (optionally compressed) from `src` into container directory `path`.

    `chown_to` is Docker's copyUIDGID: every entry is owned by that uid:gid instead of the ids in
    the archive. Nothing is ever written outside `root`.
    """
    abs_path = os.path.normpath("/" + path)
    dest = resolve_in_root(root, abs_path, follow_last=True)
    try:
        st = os.lstat(dest)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path, container) from None
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidParameter("extraction point is not a directory")
    dest_rel = os.path.relpath(dest, os.path.abspath(root))
    dest_rel = "/" if dest_rel == "." else "/" + dest_rel
    ex = _Extractor(root, dest_rel, dest, no_overwrite_dir_non_dir, chown_to)
    try:
        with tarfile.open(fileobj=src, mode="r|*") as tar:
            for member in tar:
                ex.extract(tar, member)
    except tarfile.ReadError as e:
        # An empty body extracts nothing, as with Docker's Untar.
        if str(e) != "empty file":
            raise SystemError_(f"Error processing tar file({e})") from None
    except tarfile.TarError as e:
        raise SystemError_(f"Error processing tar file({e})") from None
    ex.finish()


class _Extractor:
    def __init__(
        self,
        root: str,
        dest_rel: str,
        dest_host: str,
        no_overwrite: bool,
        chown_to: tuple[int, int] | None,
    ) -> None:
        self.root = os.path.abspath(root)
        self.dest_rel = dest_rel
        self.dest_host = dest_host
        self.no_overwrite = no_overwrite
        self.chown_to = chown_to
        # Directory times are set last: creating entries inside would bump them again.
        self.dir_times: list[tuple[str, int]] = []

    def extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = os.path.normpath("/" + member.name).lstrip("/")
        # Like Docker, "/x" means "x" under the destination; only relative ".." can break out.
        if not member.name.startswith("/") and _escapes(member.name):
            raise SystemError_(
                f"{_q(os.path.normpath(member.name))} is outside of {_q(self.dest_rel)}"
            )
        if rel in ("", "."):
            # The archive's "." entry describes the destination directory itself.
            self._apply_meta(self.dest_host, member)
            return
        target = self._target(rel)
        if self._prepare(target, member):
            self._create(tar, member, target)
        self._apply_meta(target, member)

    def _target(self, rel: str) -> str:
        parent, base = os.path.split(rel)
        parent_host = resolve_in_root(self.root, f"{self.dest_rel}/{parent}", follow_last=True)
        if not os.path.lexists(parent_host):
            os.makedirs(parent_host, 0o755, exist_ok=True)
        return os.path.join(parent_host, base)

    def _prepare(self, target: str, member: tarfile.TarInfo) -> bool:
        """Clear the way for `member`; False when an existing directory should just be merged."""
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return True
        is_dir = stat.S_ISDIR(st.st_mode)
        inside = self._container_path(target)
        if self.no_overwrite and is_dir and not member.isdir():
            raise SystemError_(
                f"cannot overwrite directory {_q(inside)} with non-directory {_q(self.dest_rel)}"
            )
        if self.no_overwrite and not is_dir and member.isdir():
            raise SystemError_(
                f"cannot overwrite non-directory {_q(inside)} with directory {_q(self.dest_rel)}"
            )
        if is_dir and member.isdir():
            return False
        if is_dir:
            shutil.rmtree(target)
        else:
            os.unlink(target)
        return True

    def _container_path(self, host: str) -> str:
        rel = os.path.relpath(host, self.root)
        return "/" if rel == "." else "/" + rel

    def _create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
        if member.isdir():
            os.mkdir(target, 0o700)
        elif member.isreg():
            self._write_file(tar, member, target)
        elif member.issym():
            os.symlink(member.linkname, target)
        elif member.islnk():
            self._hardlink(member, target)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = {
                tarfile.CHRTYPE: stat.S_IFCHR,
                tarfile.BLKTYPE: stat.S_IFBLK,
                tarfile.FIFOTYPE: stat.S_IFIFO,
            }
            os.mknod(
                target, kind[member.type] | 0o600, os.makedev(member.devmajor, member.devminor)
            )

    def _write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "wb") as f:
            data = tar.extractfile(member)
            if data is not None:
                shutil.copyfileobj(data, f, 1 << 20)

    def _hardlink(self, member: tarfile.TarInfo, target: str) -> None:
        if _escapes(member.linkname):
            raise SystemError_(f"invalid hardlink {_q(member.name)} -> {_q(member.linkname)}")
        link_rel = os.path.normpath("/" + member.linkname).lstrip("/")
        source = resolve_in_root(self.root, f"{self.dest_rel}/{link_rel}", follow_last=False)
        os.link(source, target, follow_symlinks=False)

    def _apply_meta(self, target: str, member: tarfile.TarInfo) -> None:
        uid, gid = self.chown_to if self.chown_to else (member.uid, member.gid)
        os.lchown(target, uid, gid)
        for key, value in member.pax_headers.items():
            if key.startswith(_XATTR_PREFIX):
                _set_xattr(target, key[len(_XATTR_PREFIX) :], value)
        if member.issym():
            mtime_ns = int(member.mtime * 10**9)
            os.utime(target, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
            return
        # chmod after chown: chown clears setuid/setgid bits.
        os.chmod(target, member.mode & 0o7777)
        mtime_ns = int(member.mtime * 10**9)
        if member.isdir():
            self.dir_times.append((target, mtime_ns))
        else:
            os.utime(target, ns=(mtime_ns, mtime_ns))

    def finish(self) -> None:
        for target, mtime_ns in reversed(self.dir_times):
            with contextlib.suppress(FileNotFoundError):
                os.utime(target, ns=(mtime_ns, mtime_ns))


def _q(text: str) -> str:
    """Go's %q for the plain strings paths are."""
    return json.dumps(text, ensure_ascii=False)


def _escapes(name: str) -> bool:
    """True when a tar entry name climbs above the extraction directory."""
    depth = 0
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        depth += -1 if comp == ".." else 1
        if depth < 0:
            return True
    return False


def _set_xattr(target: str, key: str, value: str) -> None:
    try:
        os.setxattr(target, key, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
    except OSError as e:
        # Filesystems without xattr support (or trusted.* as non-root) are not fatal for Docker.
        if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP):
            raise
