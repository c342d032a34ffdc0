"""Reading a container's files into a tar: `docker cp` out of a container (GET archive) and
`docker export`.

The tree is walked with directory fds and single names under a root opened once, never with
joined host paths, and nothing below the path asked for is followed: a directory the container
swaps for a symlink meanwhile is archived as that symlink, and FIFOs and devices are headers only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tarfile
from collections.abc import Callable
from typing import Any, BinaryIO

from runtime import inroot
from runtime.archive_paths import abs_container_path, base_name, open_entry
from runtime.archive_stat import stat_entry
from runtime.layers import PAX_XATTR_PREFIX, add_regular, stat_info

_TAR_FORMAT = tarfile.PAX_FORMAT


class TreeWriter:
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
            self.tar.addfile(stat_info(arcname, st, tarfile.SYMTYPE, target))
        elif not stat.S_ISSOCK(st.st_mode):  # sockets: Docker skips them too
            self.tar.addfile(stat_info(arcname, st, _TYPES[stat.S_IFMT(st.st_mode)]))

    def directory(self, fd: int, arcname: str, prefix: str, include_self: bool) -> None:
        if include_self:
            self.tar.addfile(stat_info(arcname, os.fstat(fd), tarfile.DIRTYPE))
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

    def regular(self, fd: int, arcname: str) -> None:
        """The regular file open at `fd`, as `arcname` (a hard link if its inode came before)."""
        self._regular(fd, arcname)

    def _regular(self, fd: int, arcname: str) -> None:
        add_regular(self.tar, self.inodes, fd, arcname, _capability_xattr)


_TYPES = {
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
}


def _capability_xattr(info: tarfile.TarInfo, fd: int) -> None:
    # Docker archives security.capability only (file capabilities, e.g. ping's cap_net_raw).
    with contextlib.suppress(OSError):
        cap = os.getxattr(fd, "security.capability")
        info.pax_headers[PAX_XATTR_PREFIX + "security.capability"] = cap.decode(
            "utf-8", "surrogateescape"
        )


def get_archive(
    root: str,
    path: str,
    out: BinaryIO,
    container: str = "",
    on_stat: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Write a tar of container `path` to `out` and return its stat.

    Like Docker, the top entry is the path's basename; a path ending in "/." (or "/") archives
    the directory as "." so the client copies its contents. `on_stat` gets the stat of the
    entry being archived before any byte is written: a caller that sends it as a header
    describes exactly what follows, even if the container renames the path meanwhile.
    """
    abs_path = abs_container_path(path)
    with inroot.opened(inroot.open_root(root)) as rootfd:
        entry = open_entry(rootfd, abs_path, path, container)
        try:
            st = stat_entry(rootfd, entry, abs_path, path, container)
            if on_stat is not None:
                on_stat(st)
            with tarfile.open(fileobj=out, mode="w|", format=_TAR_FORMAT) as tar:
                writer = TreeWriter(tar)
                if entry.name is not None:
                    writer.entry(entry.fd, entry.name, base_name(abs_path))
                else:
                    # The followed directory itself: reopened for reading through its O_PATH fd.
                    dirfd = os.open(".", inroot.O_DIR, dir_fd=entry.fd)
                    with inroot.opened(dirfd):
                        if abs_path == "/" or abs_path.endswith("/."):
                            writer.directory(dirfd, ".", "./", include_self=True)
                        else:
                            name = base_name(abs_path)
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
        TreeWriter(tar).directory(rootfd, "", "", include_self=False)
