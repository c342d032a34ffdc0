"""Unpacking a client's tar into a container: `docker cp` into a container (PUT archive).

Every lookup is made by the kernel inside the container's root (openat2 RESOLVE_IN_ROOT) and
every change relative to a directory fd with a single name, so nothing is ever written outside
the root, even while the container swaps its directories for symlinks. dockerd's breakout checks
and their wording apply on top.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tarfile
from typing import BinaryIO

from proto.docker.errors import InvalidParameter, SystemError_
from runtime import inroot
from runtime.archive_paths import components, not_found, resolve_name
from runtime.layers import PAX_XATTR_PREFIX


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
        raise not_found(path, container) from None
    except NotADirectoryError:
        pass
    # ENOTDIR: either the path names a file, or one of its parents is one (then it is missing).
    try:
        os.close(inroot.open_in_root(rootfd, abs_path, inroot.O_PATH))
    except OSError:
        raise not_found(path, container) from None
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
        for part in components(path):
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
                if key.startswith(PAX_XATTR_PREFIX):
                    _set_xattr(target, key[len(PAX_XATTR_PREFIX) :], value)
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
