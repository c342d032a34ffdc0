"""Copying files in and out of a container: `docker cp` (GET/HEAD/PUT archive) and `docker export`.

Every function takes `root`, the container's root as the host sees it (`/proc/<pid>/root` for a
running container, a mounted overlay for a stopped one). Paths are looked up by the kernel inside
that root (openat2 RESOLVE_IN_ROOT, runtime/inroot.py) and every read and write is made relative to
an open directory fd with single names, so symlinks mean what they mean inside the container, and
a container that swaps a directory for a symlink to "/" while we work cannot make us read or write
host files.
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
from runtime import inroot
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


def resolve_name(rootfd: int, path: str, follow_last: bool = True) -> str:
    """The container path `path` leads to, following symlinks as the container would see them.

    Only for reporting (a stat's linkTarget, error texts): every file access below goes through
    openat2 instead. Each lookup here is made inside the root too, so a link swapped meanwhile
    cannot make us read the host's links. Missing components are appended as they are.
    """
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
        target = _link_at(rootfd, "/" + "/".join(resolved), comp)
        if target is None:
            resolved.append(comp)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise SystemError_(f"lstat {path}: too many levels of symbolic links")
        if target.startswith("/"):
            resolved = []
        pending.extendleft(reversed(_components(target)))
    return "/" + "/".join(resolved)


def _link_at(rootfd: int, parent: str, name: str) -> str | None:
    """The target if parent/name is a symlink, else None (also when it does not exist)."""
    try:
        fd = inroot.open_in_root(rootfd, parent, inroot.O_PATH | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with inroot.opened(fd):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            return os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
        except (FileNotFoundError, NotADirectoryError):
            return None


def resolve_in_root(root: str, path: str, follow_last: bool = True) -> str:
    """Host path of container `path` under `root` (for tests and messages, never for access)."""
    with inroot.opened(inroot.open_root(root)) as rootfd:
        return os.path.join(os.path.abspath(root), resolve_name(rootfd, path, follow_last)[1:])


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


def _not_found(path: str, container: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {container}")


def _open(rootfd: int, abs_path: str, flags: int, path: str, container: str) -> int:
    """openat2 inside the root with Docker's lstat errors."""
    try:
        return inroot.open_in_root(rootfd, abs_path, flags)
    except FileNotFoundError:
        raise _not_found(path, container) from None
    except NotADirectoryError:
        raise SystemError_(f"lstat {abs_path}: not a directory") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SystemError_(f"lstat {abs_path}: too many levels of symbolic links") from None
        raise


class _Entry:
    """An opened container path: `fd` is the entry itself (O_PATH) when the path names a
    directory to follow, else `fd` is its parent and `name` the entry in it (not followed)."""

    def __init__(self, fd: int, name: str | None) -> None:
        self.fd = fd
        self.name = name

    def lstat(self) -> os.stat_result:
        if self.name is None:
            return os.fstat(self.fd)
        return os.stat(self.name, dir_fd=self.fd, follow_symlinks=False)

    def close(self) -> None:
        os.close(self.fd)


def _entry(rootfd: int, abs_path: str, path: str, container: str) -> _Entry:
    if abs_path == "/" or _follows_last(abs_path):
        return _Entry(_open(rootfd, abs_path, inroot.O_PATH, path, container), None)
    parent, base = os.path.split(abs_path)
    fd = _open(rootfd, parent, inroot.O_PATH | os.O_DIRECTORY, path, container)
    return _Entry(fd, base)


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


def _stat(rootfd: int, entry: _Entry, abs_path: str, path: str, container: str) -> dict[str, Any]:
    try:
        st = entry.lstat()
    except FileNotFoundError:
        raise _not_found(path, container) from None
    except NotADirectoryError:
        st = None
    # A trailing "/" on a non-directory is ENOTDIR for the kernel (and so for Docker).
    if st is None or (_follows_last(abs_path) and not stat.S_ISDIR(st.st_mode)):
        raise SystemError_(f"lstat {abs_path}: not a directory")
    # Docker reports where a link finally leads, as an absolute container path.
    link_target = resolve_name(rootfd, abs_path) if stat.S_ISLNK(st.st_mode) else ""
    return {
        "name": _base_name(abs_path),
        "size": st.st_size,
        "mode": go_file_mode(st.st_mode),
        "mtime": rfc3339nano(st.st_mtime_ns),
        "linkTarget": link_target,
    }


def stat_path(root: str, path: str, container: str = "") -> dict[str, Any]:
    """Docker's ContainerPathStat for `path` (the `X-Docker-Container-Path-Stat` object).

    `container` is the name or id the user gave; it only appears in the not-found message.
    """
    abs_path = _abs_container_path(path)
    with inroot.opened(inroot.open_root(root)) as rootfd:
        entry = _entry(rootfd, abs_path, path, container)
        try:
            return _stat(rootfd, entry, abs_path, path, container)
        finally:
            entry.close()


# ---------------------------------------------------------------- writing tars


class _Exactly:
    """`size` bytes of an open file, zero-padded if it shrank under us: the header is written
    before the data, and tarfile refuses a short body."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = os.read(self.fd, n) if n else b""
        data += b"\0" * (n - len(data))
        self.left -= n
        return data


class _TreeWriter:
    """Tar entries for a container tree, walked with directory fds and single names (never a
    joined host path), so a directory swapped for a symlink is archived as that symlink."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.inodes: dict[tuple[int, int], str] = {}

    def entry(self, dirfd: int, name: str, arcname: str) -> None:
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return  # removed while we walked
        if stat.S_ISDIR(st.st_mode):
            fd = self._open(dirfd, name, os.O_RDONLY | os.O_DIRECTORY)
            if fd is not None:
                with inroot.opened(fd):
                    self.directory(fd, arcname, arcname + "/", include_self=True)
        elif stat.S_ISREG(st.st_mode):
            # O_NONBLOCK: if a FIFO took the file's place, open must not wait for a writer.
            fd = self._open(dirfd, name, os.O_RDONLY | os.O_NONBLOCK)
            if fd is not None:
                with inroot.opened(fd):
                    self._regular(fd, arcname)
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(name, dir_fd=dirfd)
            except (FileNotFoundError, OSError):
                return
            self.tar.addfile(_header(st, arcname, tarfile.SYMTYPE, target))
        elif not stat.S_ISSOCK(st.st_mode):  # sockets: Docker skips them too
            self.tar.addfile(_header(st, arcname, _TYPES[stat.S_IFMT(st.st_mode)]))

    def directory(self, fd: int, arcname: str, prefix: str, include_self: bool) -> None:
        if include_self:
            self.tar.addfile(_header(os.fstat(fd), arcname, tarfile.DIRTYPE))
        for name in sorted(os.listdir(fd)):
            self.entry(fd, name, prefix + name)

    def _open(self, dirfd: int, name: str, flags: int) -> int | None:
        try:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError as e:
            # Replaced by a symlink or something else between lstat and open: skipped, as a
            # file removed during the walk is.
            if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                return None
            raise

    def _regular(self, fd: int, arcname: str) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.inodes:
            self.tar.addfile(_header(st, arcname, tarfile.LNKTYPE, self.inodes[key]))
            return
        if st.st_nlink > 1:
            self.inodes[key] = arcname
        info = _header(st, arcname, tarfile.REGTYPE)
        info.size = st.st_size
        # Docker archives security.capability only (file capabilities, e.g. ping's cap_net_raw).
        with contextlib.suppress(OSError):
            cap = os.getxattr(fd, "security.capability")
            info.pax_headers[_XATTR_PREFIX + "security.capability"] = cap.decode(
                "utf-8", "surrogateescape"
            )
        self.tar.addfile(info, _Exactly(fd, st.st_size))  # type: ignore[arg-type]


_TYPES = {
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
}


def _header(st: os.stat_result, arcname: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    # Docker writes numeric ids only: host user names mean nothing inside the container.
    info.uid = st.st_uid
    info.gid = st.st_gid
    info.uname = ""
    info.gname = ""
    info.mtime = int(st.st_mtime)
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor = os.major(st.st_rdev)
        info.devminor = os.minor(st.st_rdev)
    return info


def get_archive(root: str, path: str, out: BinaryIO, container: str = "") -> dict[str, Any]:
    """Write a tar of container `path` to `out` and return its stat.

    Like Docker, the top entry is the path's basename; a path ending in "/." (or "/") archives
    the directory as "." so the client copies its contents.
    """
    abs_path = _abs_container_path(path)
    with inroot.opened(inroot.open_root(root)) as rootfd:
        entry = _entry(rootfd, abs_path, path, container)
        try:
            st = _stat(rootfd, entry, abs_path, path, container)
            with tarfile.open(fileobj=out, mode="w|", format=_TAR_FORMAT) as tar:
                writer = _TreeWriter(tar)
                if entry.name is not None:
                    writer.entry(entry.fd, entry.name, _base_name(abs_path))
                else:
                    # The followed directory itself: reopened for reading through its O_PATH fd.
                    dirfd = os.open(".", inroot.O_DIR, dir_fd=entry.fd)
                    with inroot.opened(dirfd):
                        if abs_path == "/" or abs_path.endswith("/."):
                            writer.directory(dirfd, ".", "./", include_self=True)
                        else:
                            name = _base_name(abs_path)
                            writer.directory(dirfd, name, name + "/", include_self=True)
        finally:
            entry.close()
    return st


def export_tree(root: str, out: BinaryIO) -> None:
    """`docker export`: a tar of the whole root filesystem, entries relative without "./"."""
    with (
        inroot.opened(inroot.open_root(root)) as rootfd,
        tarfile.open(fileobj=out, mode="w|", format=_TAR_FORMAT) as tar,
    ):
        _TreeWriter(tar).directory(rootfd, "", "", include_self=False)


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
    the archive. Every lookup is made by the kernel inside `root` (openat2 RESOLVE_IN_ROOT) and
    every change relative to a directory fd, so nothing is ever written outside `root`, even while
    the container swaps its directories for symlinks.
    """
    abs_path = os.path.normpath("/" + path)
    with inroot.opened(inroot.open_root(root)) as rootfd:
        destfd = _open_destination(rootfd, abs_path, path, container)
        with inroot.opened(destfd):
            dest_rel = resolve_name(rootfd, abs_path)
            ex = _Extractor(rootfd, dest_rel, destfd, no_overwrite_dir_non_dir, chown_to)
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


def _open_destination(rootfd: int, abs_path: str, path: str, container: str) -> int:
    try:
        return inroot.open_in_root(rootfd, abs_path, inroot.O_DIR)
    except FileNotFoundError:
        raise _not_found(path, container) from None
    except NotADirectoryError:
        pass
    # ENOTDIR: either the path names a file, or one of its parents is one (then it is missing).
    try:
        os.close(inroot.open_in_root(rootfd, abs_path, inroot.O_PATH))
    except OSError:
        raise _not_found(path, container) from None
    raise InvalidParameter("extraction point is not a directory")


class _Extractor:
    def __init__(
        self,
        rootfd: int,
        dest_rel: str,
        destfd: int,
        no_overwrite: bool,
        chown_to: tuple[int, int] | None,
    ) -> None:
        self.rootfd = rootfd
        self.dest_rel = dest_rel
        self.destfd = destfd
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
            self._apply_meta(self.destfd, ".", member, self.dest_rel, os.dup(self.destfd))
            return
        parent_rel, base = os.path.split(rel)
        inside = _join(self.dest_rel, rel)
        self._check_link(member, inside)
        pfd = self._parent(parent_rel)
        try:
            fd = None
            if self._prepare(pfd, base, member, inside):
                fd = self._create(tar, member, pfd, base)
            self._apply_meta(pfd, base, member, inside, fd)
        finally:
            if pfd != self.destfd:
                os.close(pfd)

    def _check_link(self, member: tarfile.TarInfo, inside: str) -> None:
        """Docker's breakout checks: a link may not point above the extraction directory."""
        if member.issym():
            target = os.path.normpath(os.path.join(os.path.dirname(inside), member.linkname))
            if not member.linkname.startswith("/") and not _within(target, self.dest_rel):
                raise SystemError_(f"invalid symlink {_q(target)} -> {_q(member.linkname)}")
        elif member.islnk():
            target = os.path.normpath(_join(self.dest_rel, member.linkname))
            if _escapes(member.linkname):
                raise SystemError_(f"invalid hardlink {_q(target)} -> {_q(member.linkname)}")

    def _parent(self, parent_rel: str) -> int:
        """An fd for the entry's parent directory inside the root, created if missing; a
        symlink on the way is followed the way the container would (inside its root)."""
        if not parent_rel:
            return self.destfd
        path = _join(self.dest_rel, parent_rel)
        try:
            return inroot.open_in_root(self.rootfd, path, inroot.O_DIR)
        except FileNotFoundError:
            pass
        # Created where the container would create it: a dangling symlink on the way names it.
        path = resolve_name(self.rootfd, path)
        done = ""
        for part in _components(path):
            step = f"{done}/{part}"
            try:
                os.close(inroot.open_in_root(self.rootfd, step, inroot.O_PATH | os.O_DIRECTORY))
            except FileNotFoundError:
                fd = inroot.open_in_root(self.rootfd, done, inroot.O_DIR)
                with inroot.opened(fd), contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            done = step
        return inroot.open_in_root(self.rootfd, path, inroot.O_DIR)

    def _prepare(self, pfd: int, base: str, member: tarfile.TarInfo, inside: str) -> bool:
        """Clear the way for `member`; False when an existing directory should just be merged."""
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        is_dir = stat.S_ISDIR(st.st_mode)
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
            shutil.rmtree(base, dir_fd=pfd)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base, dir_fd=pfd)
        return True

    def _create(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, pfd: int, base: str
    ) -> int | None:
        """Make the entry; returns an fd on it when creating gave one (a regular file)."""
        if member.isdir():
            os.mkdir(base, 0o700, dir_fd=pfd)
        elif member.isreg():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
            data = tar.extractfile(member)
            if data is not None:
                with os.fdopen(os.dup(fd), "wb") as f:
                    shutil.copyfileobj(data, f, 1 << 20)
            return fd
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=pfd)
        elif member.islnk():
            self._hardlink(member, pfd, base)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = {
                tarfile.CHRTYPE: stat.S_IFCHR,
                tarfile.BLKTYPE: stat.S_IFBLK,
                tarfile.FIFOTYPE: stat.S_IFIFO,
            }
            dev = os.makedev(member.devmajor, member.devminor)
            os.mknod(base, kind[member.type] | 0o600, dev, dir_fd=pfd)
        return None

    def _hardlink(self, member: tarfile.TarInfo, pfd: int, base: str) -> None:
        link_rel = os.path.normpath("/" + member.linkname).lstrip("/")
        src_parent, src_base = os.path.split(link_rel)
        path = _join(self.dest_rel, src_parent)
        with inroot.opened(inroot.open_in_root(self.rootfd, path, inroot.O_PATH)) as sfd:
            os.link(src_base, base, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)

    def _apply_meta(
        self, pfd: int, base: str, member: tarfile.TarInfo, inside: str, fd: int | None
    ) -> None:
        uid, gid = self.chown_to if self.chown_to else (member.uid, member.gid)
        mtime_ns = int(member.mtime * 10**9)
        if fd is None:
            try:
                fd = os.open(base, inroot.O_PATH | os.O_NOFOLLOW, dir_fd=pfd)
            except FileNotFoundError:
                return  # removed by the container already
        with inroot.opened(fd):
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                # Not followed: a name in a directory we hold, so it stays inside the root.
                os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
                os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)
                return
            # Through the fd: the very inode made above, whatever the name points to now.
            target = inroot.fd_path(fd)
            os.chown(target, uid, gid)
            for key, value in member.pax_headers.items():
                if key.startswith(_XATTR_PREFIX):
                    _set_xattr(target, key[len(_XATTR_PREFIX) :], value)
            # chmod after chown: chown clears setuid/setgid bits.
            os.chmod(target, member.mode & 0o7777)
            if stat.S_ISDIR(st.st_mode):
                self.dir_times.append((inside, mtime_ns))
            else:
                os.utime(target, ns=(mtime_ns, mtime_ns))

    def finish(self) -> None:
        for inside, mtime_ns in reversed(self.dir_times):
            try:
                fd = inroot.open_in_root(self.rootfd, inside, inroot.O_PATH | os.O_NOFOLLOW)
            except OSError:
                continue  # gone or replaced meanwhile
            with inroot.opened(fd):
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    os.utime(inroot.fd_path(fd), ns=(mtime_ns, mtime_ns))


def _join(dest: str, rel: str) -> str:
    return "/" + os.path.normpath(f"{dest}/{rel}").lstrip("/") if rel else dest


def _within(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


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
        os.setxattr(target, key, value.encode("utf-8", "surrogateescape"))
    except OSError as e:
        # Filesystems without xattr support (or trusted.* as non-root) are not fatal for Docker.
        if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP):
            raise
