"""mount(2) and umount2(2) through libc: no `mount` process per call."""

from __future__ import annotations

import ctypes
import errno
import os

MS_BIND = 4096
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str, target: str, fstype: str = "", flags: int = 0, data: str = "") -> None:
    """OSError (errno set, message naming the target) when the kernel refuses."""
    ret = _libc.mount(
        source.encode(), target.encode(), fstype.encode() or None, flags, data.encode() or None
    )
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def unmount(target: str) -> bool:
    """Lazy unmount; False when `target` is no mount point (EINVAL) or is gone (ENOENT)."""
    if _libc.umount2(target.encode(), MNT_DETACH) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(err, f"umount {target}: {os.strerror(err)}")
