"""Layer tars and overlay directories: unpacking, packing, and `docker diff`.

A layer on disk is an overlayfs-ready directory: Docker/OCI whiteouts (`.wh.name`,
`.wh..wh..opq`) become a char device 0:0 and the `trusted.overlay.opaque=y` xattr, so the
directories can be stacked as `lowerdir`s directly. Packing an overlay upper dir does the reverse.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from typing import Any, BinaryIO

from proto.docker.errors import InvalidParameter, go_quote

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# overlayfs keeps its own bookkeeping in trusted.overlay.*; it never belongs in a layer tar.
_OVERLAY_XATTR_PREFIX = "trusted.overlay."
_XATTR_PAX = "SCHILY.xattr."

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
        rel = _clean_name(m.name)
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
                raise InvalidParameter(f"{go_quote(name)} is outside of {go_quote(self.dest)}")
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
        target = os.path.join(parent, base[len(WHITEOUT_PREFIX) :])
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
        rel = _clean_name(m.linkname)
        if rel is None:
            raise InvalidParameter(f"invalid hardlink {go_quote(m.linkname)}")
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


def _clean_name(name: str) -> str | None:
    """The entry's path relative to the layer root, or None for the root; refuses `..` escapes."""
    parts: list[str] = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise InvalidParameter(f"{go_quote(name)} is outside of the layer")
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts) if parts else None


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
        if key.startswith(_XATTR_PAX):
            _set_xattr(path, key[len(_XATTR_PAX) :], value.encode("utf-8", "surrogateescape"))


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
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in _walk_sorted(root):
            _add_entry(tar, os.path.join(root, rel), rel, overlay)


def _walk_sorted(root: str) -> list[str]:
    """Every path under root, relative, parents before children, in name order."""
    result: list[str] = []
    _walk_into(root, "", result)
    return result


def _walk_into(root: str, rel: str, result: list[str]) -> None:
    host = os.path.join(root, rel) if rel else root
    for name in sorted(os.listdir(host)):
        child = f"{rel}/{name}" if rel else name
        result.append(child)
        st = os.lstat(os.path.join(root, child))
        if stat.S_ISDIR(st.st_mode):
            _walk_into(root, child, result)


def _add_entry(tar: tarfile.TarFile, host: str, rel: str, overlay: bool) -> None:
    st = os.lstat(host)
    if overlay and _is_whiteout(st):
        parent, base = os.path.split(rel)
        info = _plain_info(os.path.join(parent, WHITEOUT_PREFIX + base), st)
        info.mode = 0o600
        tar.addfile(info)
        return
    info = tar.gettarinfo(host, arcname=rel)
    info.uname = ""
    info.gname = ""
    info.mtime = int(st.st_mtime)
    xattrs = _read_xattrs(host)
    for key, value in xattrs.items():
        info.pax_headers[_XATTR_PAX + key] = value.decode("utf-8", "surrogateescape")
    if info.isreg():
        with open(host, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)
    if overlay and info.isdir() and _is_opaque(host):
        opq = _plain_info(os.path.join(rel, WHITEOUT_OPAQUE), st)
        opq.mode = st.st_mode & 0o777
        tar.addfile(opq)


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


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _read_xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    result: dict[str, bytes] = {}
    for name in sorted(names):
        if name.startswith(_OVERLAY_XATTR_PREFIX):
            continue
        try:
            result[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return result


# --------------------------------------------------------------------------- docker diff


def changes(upper: str, lowers: list[str]) -> list[dict[str, Any]]:
    """`docker diff` of an overlay upper dir against its lower dirs (top first), sorted by path."""
    result: dict[str, int] = {}
    changed_dirs: set[str] = set()
    for rel in _walk_sorted(upper):
        path = "/" + rel
        st = os.lstat(os.path.join(upper, rel))
        kind = _change_kind(upper, rel, st, lowers)
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


def _change_kind(upper: str, rel: str, st: os.stat_result, lowers: list[str]) -> int | None:
    if _is_whiteout(st):
        return CHANGE_DELETE
    # An opaque dir hides a lower one: Docker reports that as a delete.
    if (
        stat.S_ISDIR(st.st_mode)
        and _is_opaque(os.path.join(upper, rel))
        and any(os.path.exists(os.path.join(lower, rel)) for lower in lowers)
    ):
        return CHANGE_DELETE
    for lower in lowers:
        try:
            lst = os.stat(os.path.join(lower, rel))
        except OSError:
            continue
        if stat.S_ISDIR(lst.st_mode) and stat.S_ISDIR(st.st_mode) and _same_dir(st, lst):
            return None  # only there as a parent of a change; recorded via the child
        return CHANGE_MODIFY
    return CHANGE_ADD


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
