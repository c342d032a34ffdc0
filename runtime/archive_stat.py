"""`docker cp`'s stat (HEAD archive, the `X-Docker-Container-Path-Stat` object) in Go's terms."""

from __future__ import annotations

import stat
from typing import Any

from proto.docker.errors import SystemError_
from runtime import inroot
from runtime.archive_paths import (
    Entry,
    abs_container_path,
    base_name,
    follows_last,
    not_found,
    open_entry,
    resolve_name,
)
from runtime.timefmt import rfc3339nano

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


def stat_entry(
    rootfd: int, entry: Entry, abs_path: str, path: str, container: str
) -> dict[str, Any]:
    try:
        st = entry.lstat()
    except FileNotFoundError:
        raise not_found(path, container) from None
    except NotADirectoryError:
        st = None
    # A trailing "/" on a non-directory is ENOTDIR for the kernel (and so for Docker).
    if st is None or (follows_last(abs_path) and not stat.S_ISDIR(st.st_mode)):
        raise SystemError_(f"lstat {abs_path}: not a directory")
    # Docker reports where a link finally leads, as an absolute container path.
    link_target = resolve_name(rootfd, abs_path) if stat.S_ISLNK(st.st_mode) else ""
    return {
        "name": base_name(abs_path),
        "size": st.st_size,
        "mode": go_file_mode(st.st_mode),
        "mtime": rfc3339nano(st.st_mtime_ns),
        "linkTarget": link_target,
    }


def stat_path(root: str, path: str, container: str = "") -> dict[str, Any]:
    """Docker's ContainerPathStat for `path` (the `X-Docker-Container-Path-Stat` object).

    `container` is the name or id the user gave; it only appears in the not-found message.
    """
    abs_path = abs_container_path(path)
    with inroot.opened(inroot.open_root(root)) as rootfd:
        entry = open_entry(rootfd, abs_path, path, container)
        try:
            return stat_entry(rootfd, entry, abs_path, path, container)
        finally:
            entry.close()
