"""Opening paths inside a root directory the kernel's way: openat2(2) with RESOLVE_IN_ROOT.

A container can rename and re-link its files while we work on them; a path that is checked in
user space and then used by its host-side string can be redirected to the host between the two
steps. Here every lookup is one openat2 call relative to a directory fd: the kernel treats that
fd as "/", so absolute symlinks and `..` stay inside it whatever the container does meanwhile,
and magic links (/proc/<pid>/root inside the container) are refused. Work below the returned fd
is then done with dir_fd= and single names, never with joined host paths.

Needs Linux 5.6 (openat2); Python has no wrapper, so it is called through syscall(2).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
from collections.abc import Iterator

# <linux/openat2.h>
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# The generic syscall table gives openat2 the same number on every 64-bit architecture we run on.
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "ppc64le": 437, "s390x": 437, "riscv64": 437}

# The kernel answers EAGAIN when a rename raced a `..` step under RESOLVE_IN_ROOT; a retry is
# what the man page asks for. A container renaming in a tight loop can lose us a few rounds.
_RETRIES = 1000

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
O_PATH = os.O_PATH | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """One openat2 call; raises OSError (FileNotFoundError, ...) like os.open."""
    number = _SYS_OPENAT2.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"openat2 is not known on {platform.machine()}")
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    encoded = os.fsencode(path)
    fd = _syscall(
        ctypes.c_long(number),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(encoded),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def open_in_root(rootfd: int, path: str, flags: int = os.O_PATH, mode: int = 0) -> int:
    """Open `path` (absolute or not) as if `rootfd` were "/": nothing outside it is reachable."""
    resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
    path = path or "/"
    for _ in range(_RETRIES):
        try:
            return openat2(rootfd, path, flags, mode, resolve)
        except OSError as e:
            # EXDEV: the kernel saw the walk leave the root through a concurrent rename.
            if e.errno not in (errno.EAGAIN, errno.EXDEV):
                raise
    raise OSError(errno.EAGAIN, "path kept changing during lookup", path)


def open_root(path: str) -> int:
    """An fd for a root directory (a rootfs, /proc/<pid>/root, a scratch dir)."""
    return os.open(path, O_DIR)


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    """Close `fd` on the way out."""
    try:
        yield fd
    finally:
        os.close(fd)


def fd_path(fd: int) -> str:
    """A path naming exactly the inode behind `fd`, for calls that have no fd form (O_PATH)."""
    return f"/proc/self/fd/{fd}"


def available() -> bool:
    """Whether this kernel has openat2 (Linux ≥ 5.6)."""
    try:
        os.close(openat2(-100, "/", O_PATH, 0, RESOLVE_IN_ROOT))  # AT_FDCWD
    except OSError as e:
        if e.errno == errno.ENOSYS:
            return False
        raise
    return True
