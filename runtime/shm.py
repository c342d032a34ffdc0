"""A container's /dev/shm for each `--ipc` mode, as dockerd 20.10 makes it (setupIpcDirs,
IpcMounts, WithMounts, UnmountIpcMount).

- `private` (the default): a tmpfs of ShmSize that the shim mounts inside the container.
- `none`: no /dev/shm at all.
- `shareable`: a tmpfs of ShmSize (mode 1777, nosuid, nodev, noexec) mounted on the host at
  `<bundle>/mounts/shm` and bound to /dev/shm, so `--ipc container:` joiners bind the same one.
- `host`: the host's /dev/shm, bound.
- `container:X`: X's /dev/shm directory (its host tmpfs, the host's, or its own donor's).

A user's mount at /dev/shm wins over all of these. The host tmpfs lives only while its container
runs: `release` unmounts it lazily, so a joiner that still runs keeps its bind (and the files in
it) as with dockerd; the owner's next start gets a fresh one. Joiners reach it through this
directory of the data root, never through a path in another container's root.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from typing import TYPE_CHECKING, Any

from proto.docker.errors import DockerError
from runtime import config_mounts, mounts
from runtime.launch import MountSpec, bind

if TYPE_CHECKING:
    from runtime.config_types import ContainerSpec
    from runtime.record import ContainerRecord

TARGET = "/dev/shm"
HOST_SHM = "/dev/shm"
_TMPFS_FLAGS = mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC


def host_dir(bundle: str) -> str:
    """Where a shareable container's tmpfs is mounted on the host (dockerd:
    `containers/<id>/mounts/shm`)."""
    return os.path.join(bundle, "mounts", "shm")


def joinable(donor: ContainerRecord) -> str:
    """The directory a joiner of the running `donor` binds as its /dev/shm, or "" when the
    donor's IPC is not shareable (dockerd's getIpcContainer: its ShmPath must be a directory).
    A container's host tmpfs must still be mounted: the donor's own donor may have stopped."""
    path = donor.shm_path
    if path == HOST_SHM:
        return path if os.path.isdir(path) else ""
    if path and os.path.ismount(path):
        return path
    return ""


def setup(
    spec: ContainerSpec, bundle: str, joined: str, inherited: list[dict[str, Any]]
) -> tuple[MountSpec | None, str]:
    """The /dev/shm mount record for the shim (None: no /dev/shm) and the container's shm path
    (`ContainerRecord.shm_path`). `joined` is the donor's directory for `container:` (from
    `joinable`), `inherited` the `--volumes-from` mount points. A shareable container's tmpfs is
    mounted on the host here; `release` undoes it."""
    hc = spec.host_config
    user_mounted = any(
        posixpath.normpath(m["Destination"]) == TARGET
        for m in config_mounts.mounts_of(spec, inherited)
    )
    mode = hc.ipc_mode
    if mode == "none":
        return None, ""
    if mode == "host":
        if not os.path.isdir(HOST_SHM):
            raise DockerError("/dev/shm is not mounted, but must be for --ipc=host")
        path = HOST_SHM
    elif mode.startswith("container:"):
        path = joined
    elif mode == "shareable" and not user_mounted:
        path = host_dir(bundle)
        _mount_tmpfs(path, hc.shm_size)
    elif user_mounted:  # private or shareable: the user's mount is the container's /dev/shm
        return None, ""
    else:
        data = f"mode=1777,size={hc.shm_size}"
        return MountSpec("shm", TARGET, "tmpfs", ["nosuid", "nodev", "noexec"], data), ""
    return (None if user_mounted else bind(path, TARGET)), path


def _mount_tmpfs(path: str, size: int) -> None:
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    while mounts.unmount(path):  # one a crash left: never stack a second on it
        pass
    mounts.mount("shm", path, "tmpfs", _TMPFS_FLAGS, f"mode=1777,size={size}")


def release(bundle: str) -> None:
    """Unmount and remove a container's host tmpfs, if it has one (after its exit, a failed
    start, or a crash). Lazily, as dockerd: joiners keep their binds."""
    path = host_dir(bundle)
    while mounts.unmount(path):
        pass
    # A directory left behind is harmless: `joinable` wants the mount, not the directory.
    with contextlib.suppress(OSError):
        os.rmdir(path)
