"""COPY and ADD into the root of the step's filesystem, with dockerd's copy rules: a directory
source copies its contents into the destination directory, a file goes to `dest` or, when `dest`
ends in `/` or is an existing directory, to `dest/<name>`; ADD extracts a local tar archive
(plain or compressed) into the destination instead; `--chown` gives every copied entry its
owner (names looked up in the image's own /etc/passwd and /etc/group), context files are
otherwise owned by root and `--from` files keep theirs.

Nothing here has a copier of its own: the sources are packed by the `docker cp` packer
(runtime/archive_pack.TreeWriter, fd-walks inside the source root) and unpacked by the `docker
cp` unpacker (runtime/archive_unpack.put_archive), which opens every destination inside the
step's root with openat2 RESOLVE_IN_ROOT: a symlink in the image pointing out of the root, or a
link in the context, cannot take a copy onto the host.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
import time

from proto.docker.errors import InvalidParameter
from runtime import inroot
from runtime.archive_pack import TreeWriter
from runtime.archive_unpack import put_archive
from runtime.build_sources import Source

Owner = tuple[int, int]


def normalize_dest(workdir: str, dest: str) -> str:
    """normalizeDest: relative to the working dir, a trailing `/` kept."""
    if dest.startswith("/"):
        return dest
    out = os.path.normpath(os.path.join("/", workdir or "/", dest))
    return out + "/" if dest.endswith("/") and out != "/" else out


def parse_chown(root: str, chown: str) -> Owner:
    """parseChownFlag: `user[:group]`, names from the image's files; only a user means the
    group of the same name or number."""
    parts = chown.split(":")
    if len(parts) > 2:
        raise InvalidParameter(f"invalid chown string format: {chown}")
    user, group = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    try:
        uid = _lookup(root, "/etc/passwd", user, "user")
    except InvalidParameter as e:
        raise InvalidParameter(f"{_prefix()}can't find uid for user {user}: {e}") from None
    try:
        gid = _lookup(root, "/etc/group", group, "group")
    except InvalidParameter as e:
        raise InvalidParameter(f"{_prefix()}can't find gid for group {group}: {e}") from None
    return uid, gid


def _prefix() -> str:
    return "unable to convert uid/gid chown string to host mapping: "


def _lookup(root: str, path: str, name: str, kind: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        with inroot.opened(inroot.open_root(root)) as rootfd:
            fd = inroot.open_in_root(rootfd, path, os.O_RDONLY)
            with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as f:
                lines = f.read(1 << 20).splitlines()
    except OSError:
        raise InvalidParameter(f"no such {kind}: {name}") from None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    raise InvalidParameter(f"no such {kind}: {name}")


def copy_sources(
    src_root: str,
    sources: list[Source],
    dest_root: str,
    dest: str,
    owner: Owner | None,
    decompress: bool,
    scratch: str,
) -> None:
    """Copy each source from `src_root` to `dest` (already normalized) in `dest_root`."""
    for source in sources:
        with tempfile.TemporaryFile(dir=scratch) as packed:
            if decompress and not source.is_dir and _is_archive(src_root, source.path):
                ensure_dir(dest_root, dest, owner, scratch)
                _open_source(src_root, source.path, packed)
                packed.seek(0)
                put_archive(dest_root, dest, packed)
                continue
            _pack(src_root, source, dest_root, dest, owner, packed)
            packed.seek(0)
            put_archive(dest_root, "/", packed, chown_to=owner)


def _pack(
    src_root: str, source: Source, dest_root: str, dest: str, owner: Owner | None, out: object
) -> None:
    with (
        inroot.opened(inroot.open_root(src_root)) as srcfd,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar,  # type: ignore[call-overload]
    ):
        writer = TreeWriter(tar)
        if source.is_dir:
            target = os.path.normpath(dest).lstrip("/")
            if target and not _is_dir(dest_root, dest):
                tar.addfile(_dir_entry(target, owner))
            fd = inroot.open_in_root(srcfd, source.path, inroot.O_DIR)
            with inroot.opened(fd):
                writer.directory(fd, target, f"{target}/" if target else "", include_self=False)
            return
        if dest.endswith("/") or _is_dir(dest_root, dest):
            target = os.path.join(dest, os.path.basename(source.path))
        else:
            target = dest
        fd = inroot.open_in_root(srcfd, source.path, os.O_RDONLY | os.O_NONBLOCK)
        with inroot.opened(fd):
            if stat.S_ISREG(os.fstat(fd).st_mode):
                writer.regular(fd, os.path.normpath(target).lstrip("/"))


def _dir_entry(name: str, owner: Owner | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.uid, info.gid = owner or (0, 0)
    info.mtime = int(time.time())
    return info


def _is_dir(root: str, path: str) -> bool:
    """Whether `path` is a directory in `root`, links followed inside it."""
    with inroot.opened(inroot.open_root(root)) as rootfd:
        try:
            fd = inroot.open_in_root(rootfd, path, inroot.O_PATH)
        except OSError:
            return False
        with inroot.opened(fd):
            return stat.S_ISDIR(os.fstat(fd).st_mode)


def ensure_dir(root: str, path: str, owner: Owner | None, scratch: str) -> None:
    if _is_dir(root, path):
        return
    with tempfile.TemporaryFile(dir=scratch) as packed:
        with tarfile.open(fileobj=packed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_dir_entry(os.path.normpath(path).lstrip("/"), owner))
        packed.seek(0)
        put_archive(root, "/", packed)


def _open_source(root: str, path: str, out: object) -> None:
    with inroot.opened(inroot.open_root(root)) as rootfd:
        fd = inroot.open_in_root(rootfd, path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            while chunk := f.read(1 << 20):
                out.write(chunk)  # type: ignore[attr-defined]


def _is_archive(root: str, path: str) -> bool:
    """isArchivePath: the file opens as a (possibly compressed) tar with a first entry."""
    try:
        with inroot.opened(inroot.open_root(root)) as rootfd:
            fd = inroot.open_in_root(rootfd, path, os.O_RDONLY | os.O_NONBLOCK)
            with (
                os.fdopen(fd, "rb") as f,
                tarfile.open(fileobj=f, mode="r|*") as tar,
            ):
                return tar.next() is not None
    except (OSError, tarfile.TarError, EOFError):
        return False
