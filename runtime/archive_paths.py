"""Container paths for `docker cp`: Docker's path forms, looked up inside the container's root.

Every lookup is made by the kernel inside the root (openat2 RESOLVE_IN_ROOT, runtime/inroot.py),
so symlinks mean what they mean inside the container, and a container that swaps a directory for
a symlink to "/" while we work cannot make us reach host files. Host paths built here are for
tests and messages only.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque

from proto.docker.errors import NotFound, SystemError_
from runtime import inroot

# Linux allows 40 symlinks in one lookup; past that the path is a loop.
_MAX_SYMLINKS = 40


def resolve_name(rootfd: int, path: str, follow_last: bool = True) -> str:
    """The container path `path` leads to, following symlinks as the container would see them.

    Only for reporting (a stat's linkTarget, error texts): every file access below goes through
    openat2 instead. Each lookup here is made inside the root too, so a link swapped meanwhile
    cannot make us read the host's links. Missing components are appended as they are.
    """
    pending = deque(components(path))
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
        pending.extendleft(reversed(components(target)))
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


def components(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def abs_container_path(path: str) -> str:
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


def follows_last(abs_path: str) -> bool:
    # The kernel follows a symlink named with a trailing slash; Docker's Lstat inherits that.
    return abs_path.endswith("/") or abs_path.endswith("/.")


def not_found(path: str, container: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {container}")


def open_path(rootfd: int, abs_path: str, flags: int, path: str, container: str) -> int:
    """openat2 inside the root with Docker's lstat errors."""
    try:
        return inroot.open_in_root(rootfd, abs_path, flags)
    except FileNotFoundError:
        raise not_found(path, container) from None
    except NotADirectoryError:
        raise SystemError_(f"lstat {abs_path}: not a directory") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SystemError_(f"lstat {abs_path}: too many levels of symbolic links") from None
        raise


class Entry:
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


def open_entry(rootfd: int, abs_path: str, path: str, container: str) -> Entry:
    if abs_path == "/" or follows_last(abs_path):
        return Entry(open_path(rootfd, abs_path, inroot.O_PATH, path, container), None)
    parent, base = os.path.split(abs_path)
    fd = open_path(rootfd, parent, inroot.O_PATH | os.O_DIRECTORY, path, container)
    return Entry(fd, base)


def base_name(abs_path: str) -> str:
    # Go's filepath.Base: "/" stays "/", "/a/." gives ".", "/a/" gives "a".
    if abs_path == "/":
        return "/"
    return os.path.basename(abs_path.rstrip("/"))
