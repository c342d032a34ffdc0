"""mount(2) and umount2(2) through libc (no `mount` process per call), and the temporary overlay
view of a container's layers."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import secrets
from collections.abc import AsyncIterator

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
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


@contextlib.asynccontextmanager
async def overlay_view(bundle: str, lowerdirs: list[str], writable: bool) -> AsyncIterator[str]:
    """A container's files without the mounts a running one has (/proc, volumes, ...): its rw
    layer (`<bundle>/upper`) over `lowerdirs`, mounted on a private directory of its bundle for
    the duration; read-only unless `writable` (then writes land in its rw layer)."""
    mnt = os.path.join(bundle, f"mnt-{secrets.token_hex(4)}")
    os.mkdir(mnt, 0o700)
    upper = os.path.join(bundle, "upper")
    if writable:
        work = os.path.join(bundle, "work")
        flags, opts = 0, f"lowerdir={':'.join(lowerdirs)},upperdir={upper},workdir={work}"
    else:
        flags, opts = MS_RDONLY, f"lowerdir={':'.join([upper, *lowerdirs])}"
    try:
        await asyncio.to_thread(mount, "overlay", mnt, "overlay", flags, opts)
        try:
            yield mnt
        finally:
            await asyncio.to_thread(unmount, mnt)
    finally:
        os.rmdir(mnt)
