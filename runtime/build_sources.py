"""COPY/ADD sources: each path (or wildcard) found inside a source root — the unpacked build
context, or an image's files for `--from` — and its content hash for the build cache.

Every lookup is made by the kernel inside the root (openat2 RESOLVE_IN_ROOT): a symlink in a
hostile context that points at `/etc` or `../../..` leads to the context's own `etc`, never the
host's. Walks go by directory fd and single names and never follow a link.

The hashes play the part of dockerd's tarsums (`file:<hex>`, `dir:<hex>`, `multi:<hex>` in the
step's cache key): a file's covers its type, mode, owner, size, link target and bytes; a
directory's the sorted hashes of everything below it with their relative paths.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

import re2

from proto.docker.errors import InvalidParameter, NotFound
from runtime import inroot

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_READ = 1 << 20


@dataclass
class Source:
    path: str  # relative to the root, as written (cleaned)
    hash: str
    is_dir: bool


def contains_wildcards(path: str) -> bool:
    i = 0
    while i < len(path):
        if path[i] == "\\":
            i += 2
            continue
        if path[i] in "*?[":
            return True
        i += 1
    return False


def _glob_regex(pattern: str) -> str:
    """Go's filepath.Match as an anchored RE2 pattern: `*`/`?` stay within one element."""
    out = ["^"]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise InvalidParameter("syntax error in pattern")
            body = pattern[i:end]
            if body.startswith("^") or body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif ch == "\\" and i < len(pattern):
            out.append(re2.escape(pattern[i]))
            i += 1
        else:
            out.append(re2.escape(ch))
    out.append("$")
    return "".join(out)


def _clean(orig: str) -> str:
    path = orig.removeprefix("/").removeprefix("./")
    return os.path.normpath("/" + path).lstrip("/") or "."


def find_sources(root: str, originals: list[str], from_context: bool) -> list[Source]:
    """The sources a COPY/ADD names, each with its hash (getCopyInfosForSourcePaths)."""
    out: list[Source] = []
    with inroot.opened(inroot.open_root(root)) as rootfd:
        for orig in originals:
            path = orig.removeprefix("/").removeprefix("./")
            if contains_wildcards(path):
                try:
                    regex = re2.compile(_glob_regex(path), _OPTIONS)
                except re2.error:
                    raise InvalidParameter("syntax error in pattern") from None
                for rel in _walk_names(rootfd):
                    if regex.search(rel) is not None:
                        out.append(_source(rootfd, rel, from_context))
            else:
                out.append(_source(rootfd, _clean(path), from_context))
    if not out:
        raise InvalidParameter("no source files were specified")
    return out


def _source(rootfd: int, path: str, from_context: bool) -> Source:
    try:
        fd = inroot.open_in_root(rootfd, path, inroot.O_PATH)
    except (FileNotFoundError, NotADirectoryError):
        text = f"stat {path}: file does not exist"
        if from_context:
            text = f"file not found in build context or excluded by .dockerignore: {text}"
        raise NotFound(text) from None
    with inroot.opened(fd):
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            return Source(path, "file:" + _file_hash(fd, st, ""), False)
        dirfd = os.open(".", inroot.O_DIR, dir_fd=fd)
    with inroot.opened(dirfd):
        hashes = sorted(_tree_hashes(dirfd, ""))
    digest = hashlib.sha256(",".join(hashes).encode()).hexdigest()
    return Source(path, "dir:" + digest, True)


def _file_hash(fd: int, st: os.stat_result, rel: str, link: str = "") -> str:
    h = hashlib.sha256()
    kind = stat.S_IFMT(st.st_mode)
    size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    h.update(f"{rel}\0{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}\0{st.st_gid}\0".encode())
    h.update(f"{size}\0{link}\0".encode("utf-8", "surrogateescape"))
    if stat.S_ISREG(st.st_mode):
        rfd = os.open(inroot.fd_path(fd), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        with inroot.opened(rfd):
            while chunk := os.read(rfd, _READ):
                h.update(chunk)
    return h.hexdigest()


def _tree_hashes(dirfd: int, rel: str) -> list[str]:
    out: list[str] = []
    for name in sorted(os.listdir(dirfd)):
        path = f"{rel}/{name}" if rel else name
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, inroot.O_DIR | os.O_NOFOLLOW, dir_fd=dirfd)
            with inroot.opened(sub):
                out.append(_file_hash(sub, st, path))
                out.extend(_tree_hashes(sub, path))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=dirfd)
            fd = os.open(name, inroot.O_PATH | os.O_NOFOLLOW, dir_fd=dirfd)
            with inroot.opened(fd):
                out.append(_file_hash(fd, st, path, target))
        else:
            fd = os.open(name, inroot.O_PATH | os.O_NOFOLLOW, dir_fd=dirfd)
            with inroot.opened(fd):
                out.append(_file_hash(fd, st, path))
    return out


def _walk_names(rootfd: int) -> list[str]:
    """Every path below the root, parents first, links not followed (for wildcards)."""
    out: list[str] = []

    def walk(dirfd: int, rel: str) -> None:
        for name in sorted(os.listdir(dirfd)):
            path = f"{rel}/{name}" if rel else name
            out.append(path)
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(name, inroot.O_DIR | os.O_NOFOLLOW, dir_fd=dirfd)
                with inroot.opened(sub):
                    walk(sub, path)

    top = os.open(".", inroot.O_DIR, dir_fd=rootfd)
    with inroot.opened(top):
        walk(top, "")
    return out


def sources_hash(sources: list[Source]) -> str:
    """getSourceHashFromInfos: one source's hash, or `multi:` over all of them."""
    if len(sources) == 1:
        return sources[0].hash
    joined = ",".join(s.hash for s in sources)
    return "multi:" + hashlib.sha256(joined.encode()).hexdigest()
