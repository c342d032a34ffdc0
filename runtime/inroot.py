"""Opening a path inside a container's root, never outside it: openat2(2) with RESOLVE_IN_ROOT.

The image controls every name under its root, so a path from it joined to a host path as a
string follows `etc -> /srv/host` or `data -> ../../../../tmp` onto the host. With
RESOLVE_IN_ROOT the kernel resolves symlinks (absolute or relative) and `..` as if the root
were `/`, race-free (the same rule the shim's mount code follows, runtime/shim/inroot.c).
"""

from __future__ import annotations

import ctypes
import os

_SYS_OPENAT2 = 437  # one number on every architecture (asm-generic)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH, mode: int = 0) -> int:
    """An fd of `path` looked up with `root_fd` as `/`; OSError (errno set) when it fails.
    O_CLOEXEC is always added."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(root_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)
