"""Layer tars and overlay directories: unpacking, packing, and `docker diff`.

A layer on disk is an overlayfs-ready directory: Docker/OCI whiteouts (`.wh.name`,
`.wh..wh..opq`) become a char device 0:0 and the `trusted.overlay.opaque=y` xattr, so the
directories can be stacked as `lowerdir`s directly. Packing an overlay upper dir does the reverse.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Callable
from typing import Any, BinaryIO

from proto.docker.errors import InvalidParameter, go_quote
from runtime import inroot

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# overlayfs keeps its own bookkeeping in trusted.overlay.*; it never belongs in a layer tar.
_OVERLAY_XATTR_PREFIX = "trusted.overlay."
PAX_XATTR_PREFIX = "SCHILY.xattr."

CHANGE_MODIFY = 0
CHANGE_ADD = 1
CHANGE_DELETE = 2


# --------------------------------------------------------------------------- unpacking


def unpack_layer(src: BinaryIO, dest: str) -> None:
    """Extract a layer tar (plain, gzip, bzip2 or xz) into dest, whiteouts in overlayfs form."""
    _Unpacker(dest, flat=False).run(src)


def apply_layer_flat(src: BinaryIO, dest: str) -> None:
    """Apply a layer onto a flat tree: whiteouts delete what lower layers put there."""
    _Unpacker(dest, flat=True).run(src)


class _Unpacker:
    def __init__(self, dest: str, flat: bool) -> None:
        self.dest = os.path.abspath(dest)
        self.flat = flat
        # Directory times are set last: creating children would change them again.
        self.dir_times: list[tuple[str, int]] = []
        # Paths this layer wrote; a flat opaque dir keeps these and drops everything else.
        self.unpacked: set[str] = set()

    def run(self, src: BinaryIO) -> None:
        os.makedirs(self.dest, exist_ok=True)
        try:
            with tarfile.open(fileobj=src, mode="r|*") as tar:
                for member in tar:
                    self._member(tar, member)
        except tarfile.TarError as e:
            raise InvalidParameter(_tar_error_text(e)) from e
        except EOFError as e:
            raise InvalidParameter("unexpected EOF") from e
        for path, mtime in reversed(self.dir_times):
            os.utime(path, (mtime, mtime), follow_symlinks=False)

    def _member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = _clean_name(m.name, self.dest)
        if rel is None:
            return  # the root itself ("./"): nothing to create
        parent_rel, base = os.path.split(rel)
        parent = self._safe_dir(parent_rel, m.name)
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, parent_rel, base, m)
            return
        path = os.path.join(parent, base)
        self.unpacked.add(rel)
        if m.isdir():
            self._make_dir(path, m)
            return
        _remove(path)
        if m.isreg():
            self._write_file(tar, path, m)
        elif m.issym():
            os.symlink(m.linkname, path)
        elif m.islnk():
            self._hardlink(path, m)
            return  # a hard link shares the target's inode and metadata
        elif m.ischr() or m.isblk():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(path, kind | (m.mode & 0o7777), os.makedev(m.devmajor, m.devminor))
        elif m.isfifo():
            os.mkfifo(path, m.mode & 0o7777)
        else:
            return  # unknown types are skipped, like Docker does
        _set_metadata(path, m)
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def _safe_dir(self, parent_rel: str, name: str) -> str:
        """The host path of an entry's parent dir, created if missing, never through a symlink."""
        cur = self.dest
        for part in parent_rel.split("/") if parent_rel else []:
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                os.mkdir(cur, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                # dockerd would follow it inside its chroot; a layer never needs to write
                # through a link it just made, and refusing keeps every write in this layer.
                raise _breakout(name, self.dest)
            if not stat.S_ISDIR(st.st_mode):
                raise InvalidParameter(f"{go_quote(name)}: parent is not a directory")
        return cur

    def _whiteout(self, parent: str, parent_rel: str, base: str, m: tarfile.TarInfo) -> None:
        if base == WHITEOUT_OPAQUE:
            if self.flat:
                self._clear_opaque(parent, parent_rel)
            else:
                os.setxattr(parent, OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs hardlink bookkeeping (.wh..wh.plnk etc.): not content
        original = base[len(WHITEOUT_PREFIX) :]
        if original in ("", ".", ".."):
            # ".wh..." would whiteout "..": the directory above this one, or above the layer.
            raise _breakout(m.name, self.dest)
        target = os.path.join(parent, original)
        _remove(target)
        if not self.flat:
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0))
            os.chown(target, m.uid, m.gid, follow_symlinks=False)

    def _clear_opaque(self, parent: str, parent_rel: str) -> None:
        for name in os.listdir(parent):
            rel = f"{parent_rel}/{name}" if parent_rel else name
            if rel not in self.unpacked:
                _remove(os.path.join(parent, name))

    def _make_dir(self, path: str, m: tarfile.TarInfo) -> None:
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                _remove(path)
                os.mkdir(path, 0o700)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
        _set_metadata(path, m)
        self.dir_times.append((path, m.mtime))

    def _write_file(self, tar: tarfile.TarFile, path: str, m: tarfile.TarInfo) -> None:
        data = tar.extractfile(m)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            if data is not None:
                shutil.copyfileobj(data, out, 1 << 20)

    def _hardlink(self, path: str, m: tarfile.TarInfo) -> None:
        target_path = os.path.normpath(os.path.join(self.dest, m.linkname.lstrip("/")))
        try:
            rel = _clean_name(m.linkname, self.dest)
        except InvalidParameter:
            rel = None
        if rel is None:
            raise InvalidParameter(
                f"invalid hardlink {go_quote(target_path)} -> {go_quote(m.linkname)}"
            )
        parent_rel, base = os.path.split(rel)
        target = os.path.join(self._safe_dir(parent_rel, m.linkname), base)
        if not os.path.lexists(target):
            raise InvalidParameter(f"invalid hardlink {go_quote(m.linkname)}: no such file")
        os.link(target, path, follow_symlinks=False)


def _tar_error_text(e: Exception) -> str:
    text = str(e)
    if "empty file" in text or "bad checksum" in text or "invalid header" in text:
        return "archive/tar: invalid tar header"
    return f"archive/tar: {text}"


def _clean_name(name: str, dest: str) -> str | None:
    """The entry's path relative to the layer root, or None for the root; refuses `..` escapes.

    A leading "/" means the layer root, as filepath.Join(dest, name) makes it for dockerd.
    """
    parts: list[str] = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise _breakout(name, dest)
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts) if parts else None


def _breakout(name: str, dest: str) -> InvalidParameter:
    """dockerd's breakoutError text for an entry that would leave the directory unpacked into."""
    return InvalidParameter(f"{go_quote(os.path.normpath(name))} is outside of {go_quote(dest)}")


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _set_metadata(path: str, m: tarfile.TarInfo) -> None:
    # chown before chmod: chown clears the setuid/setgid bits.
    os.chown(path, m.uid, m.gid, follow_symlinks=False)
    if not m.issym():
        os.chmod(path, m.mode & 0o7777)
    for key, value in m.pax_headers.items():
        if key.startswith(PAX_XATTR_PREFIX):
            _set_xattr(path, key[len(PAX_XATTR_PREFIX) :], value.encode("utf-8", "surrogateescape"))


def _set_xattr(path: str, name: str, value: bytes) -> None:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as e:
        # Docker ignores these too: not every filesystem (or a symlink) takes every namespace.
        if e.errno not in (errno.ENOTSUP, errno.EPERM):
            raise


# --------------------------------------------------------------------------- packing


def tar_layer_from_upper(upper: str, out: BinaryIO) -> None:
    """Write a Docker layer tar of an overlay upper dir (whiteouts back in `.wh.` form)."""
    _write_tree(upper, out, overlay=True)


def tar_tree(root: str, out: BinaryIO) -> None:
    """Write a tar of a whole directory tree (e.g. a mounted container rootfs for export)."""
    _write_tree(root, out, overlay=False)


def _write_tree(root: str, out: BinaryIO, overlay: bool) -> None:
    with (
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        inroot.opened(inroot.open_root(root)) as rootfd,
    ):
        _TreePacker(tar, overlay).children(rootfd, "")


class _TreePacker:
    """Tar entries of a tree that a running container may be changing (`commit --pause=false`):
    walked with directory fds and single names, so a directory swapped for a symlink is packed
    as that symlink and nothing outside the tree is ever opened."""

    def __init__(self, tar: tarfile.TarFile, overlay: bool) -> None:
        self.tar = tar
        self.overlay = overlay
        self.inodes: dict[tuple[int, int], str] = {}

    def children(self, dirfd: int, rel: str) -> None:
        for name in sorted(os.listdir(dirfd)):
            self.entry(dirfd, name, f"{rel}/{name}" if rel else name)

    def entry(self, dirfd: int, name: str, rel: str) -> None:
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if self.overlay and _is_whiteout(st):
            parent, base = os.path.split(rel)
            info = _plain_info(os.path.join(parent, WHITEOUT_PREFIX + base), st)
            info.mode = 0o600
            self.tar.addfile(info)
        elif stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(FileNotFoundError, OSError):
                target = os.readlink(name, dir_fd=dirfd)
                self.tar.addfile(stat_info(rel, st, tarfile.SYMTYPE, target))
        elif stat.S_ISDIR(st.st_mode):
            fd = _open_nofollow(dirfd, name, os.O_RDONLY | os.O_DIRECTORY)
            if fd is not None:
                with inroot.opened(fd):
                    self._directory(fd, rel)
        elif stat.S_ISREG(st.st_mode):
            # O_NONBLOCK: a FIFO swapped in meanwhile must not block the open.
            fd = _open_nofollow(dirfd, name, os.O_RDONLY | os.O_NONBLOCK)
            if fd is not None:
                with inroot.opened(fd):
                    self._regular(fd, rel)
        elif stat.S_IFMT(st.st_mode) in _SPECIAL:
            fd = _open_nofollow(dirfd, name, os.O_PATH)
            if fd is not None:
                with inroot.opened(fd):
                    st = os.fstat(fd)
                    if stat.S_IFMT(st.st_mode) in _SPECIAL:
                        info = stat_info(rel, st, _SPECIAL[stat.S_IFMT(st.st_mode)])
                        _add_xattrs(info, inroot.fd_path(fd))
                        self.tar.addfile(info)

    def _directory(self, fd: int, rel: str) -> None:
        st = os.fstat(fd)
        info = stat_info(rel, st, tarfile.DIRTYPE)
        _add_xattrs(info, fd)
        self.tar.addfile(info)
        if self.overlay and _is_opaque(fd):
            opq = _plain_info(os.path.join(rel, WHITEOUT_OPAQUE), st)
            opq.mode = st.st_mode & 0o777
            self.tar.addfile(opq)
        self.children(fd, rel)

    def _regular(self, fd: int, rel: str) -> None:
        add_regular(self.tar, self.inodes, fd, rel, _add_xattrs)


_SPECIAL = {
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
}


def _open_nofollow(dirfd: int, name: str, flags: int) -> int | None:
    """name in dirfd, never through a symlink; None when it changed kind since the lstat."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            return None
        raise


def add_regular(
    tar: tarfile.TarFile,
    inodes: dict[tuple[int, int], str],
    fd: int,
    name: str,
    xattrs: Callable[[tarfile.TarInfo, int], None],
) -> None:
    """The regular file open at `fd` as `name`, or a hard link to the name its inode was first
    packed under (`inodes`); `xattrs` puts the attributes the archive keeps into its header."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in inodes:
        tar.addfile(stat_info(name, st, tarfile.LNKTYPE, inodes[key]))
        return
    if st.st_nlink > 1:
        inodes[key] = name
    info = stat_info(name, st, tarfile.REGTYPE)
    info.size = st.st_size
    xattrs(info, fd)
    tar.addfile(info, _Exactly(fd, st.st_size))  # type: ignore[arg-type]


class _Exactly:
    """`size` bytes of an open file, zero-padded if it shrank after the header was written
    (tarfile refuses a short body)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = os.read(self.fd, n) if n else b""
        data += b"\0" * (n - len(data))
        self.left -= n
        return data


def stat_info(name: str, st: os.stat_result, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    """A tar header from a stat, numeric ids only (as Docker writes them)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid = st.st_uid
    info.gid = st.st_gid
    info.mtime = int(st.st_mtime)
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor = os.major(st.st_rdev)
        info.devminor = os.minor(st.st_rdev)
    return info


def _add_xattrs(info: tarfile.TarInfo, target: int | str) -> None:
    for key, value in _read_xattrs(target).items():
        info.pax_headers[PAX_XATTR_PREFIX + key] = value.decode("utf-8", "surrogateescape")


def _plain_info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE
    info.size = 0
    info.uid = st.st_uid
    info.gid = st.st_gid
    info.mtime = int(st.st_mtime)
    return info


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: int | str) -> bool:
    try:
        if isinstance(path, int):
            return os.getxattr(path, OPAQUE_XATTR) == b"y"
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _read_xattrs(path: int | str) -> dict[str, bytes]:
    """xattrs of an fd, or of a /proc/self/fd path (followed: it names the inode itself)."""
    try:
        names = os.listxattr(path)
    except OSError:
        return {}
    result: dict[str, bytes] = {}
    for name in sorted(names):
        if name.startswith(_OVERLAY_XATTR_PREFIX):
            continue
        try:
            result[name] = os.getxattr(path, name)
        except OSError:
            continue
    return result


# --------------------------------------------------------------------------- docker diff


def changes(upper: str, lowers: list[str]) -> list[dict[str, Any]]:
    """`docker diff` of an overlay upper dir against its lower dirs (top first), sorted by path.

    The upper dir belongs to a container that may be running: it is walked with directory fds,
    and lower paths are looked up without following any symlink.
    """
    result: dict[str, int] = {}
    changed_dirs: set[str] = set()
    for rel, st, opaque in _walk_upper(upper):
        path = "/" + rel
        kind = _change_kind(rel, st, opaque, lowers)
        if kind is None:
            continue
        result[path] = kind
        if stat.S_ISDIR(st.st_mode):
            changed_dirs.add(path)
        # A parent of an added/deleted entry shows as modified even if its own stat is equal.
        parent = os.path.dirname(path)
        if kind != CHANGE_MODIFY and parent != "/" and parent not in changed_dirs:
            result.setdefault(parent, CHANGE_MODIFY)
            changed_dirs.add(parent)
    return [{"Path": p, "Kind": result[p]} for p in sorted(result)]


def _walk_upper(upper: str) -> list[tuple[str, os.stat_result, bool]]:
    """(path, lstat, opaque) of every entry, parents before children, in name order."""
    out: list[tuple[str, os.stat_result, bool]] = []
    with inroot.opened(inroot.open_root(upper)) as fd:
        _walk_fd(fd, "", out)
    return out


def _walk_fd(dirfd: int, rel: str, out: list[tuple[str, os.stat_result, bool]]) -> None:
    for name in sorted(os.listdir(dirfd)):
        child = f"{rel}/{name}" if rel else name
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            out.append((child, st, False))
            continue
        fd = _open_nofollow(dirfd, name, os.O_RDONLY | os.O_DIRECTORY)
        if fd is None:
            continue
        with inroot.opened(fd):
            out.append((child, os.fstat(fd), _is_opaque(fd)))
            _walk_fd(fd, child, out)


def _lower_lstat(lower: str, rel: str) -> os.stat_result | None:
    """lstat of rel in a lower layer as overlayfs merges it: no symlink is followed on the way."""
    parent, base = os.path.split(rel)
    resolve = inroot.RESOLVE_BENEATH | inroot.RESOLVE_NO_SYMLINKS
    try:
        with inroot.opened(inroot.open_root(lower)) as root:
            fd = inroot.openat2(root, parent or ".", inroot.O_PATH | os.O_DIRECTORY, 0, resolve)
            with inroot.opened(fd):
                return os.stat(base, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None


def _change_kind(rel: str, st: os.stat_result, opaque: bool, lowers: list[str]) -> int | None:
    if _is_whiteout(st):
        return CHANGE_DELETE
    found = [lst for lst in (_lower_lstat(lower, rel) for lower in lowers) if lst is not None]
    # An opaque dir hides a lower one: Docker reports that as a delete.
    if stat.S_ISDIR(st.st_mode) and opaque and found:
        return CHANGE_DELETE
    if not found:
        return CHANGE_ADD
    lst = found[0]
    if stat.S_ISDIR(lst.st_mode) and stat.S_ISDIR(st.st_mode) and _same_dir(st, lst):
        return None  # only there as a parent of a change; recorded via the child
    return CHANGE_MODIFY


def _same_dir(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_size == b.st_size and a.st_mode == b.st_mode and a.st_mtime_ns == b.st_mtime_ns


# --------------------------------------------------------------------------- sizes


def dir_size(root: str) -> int:
    """Bytes a layer dir holds like Docker counts them: non-dirs by st_size, hardlinks once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += st.st_size
    return total
