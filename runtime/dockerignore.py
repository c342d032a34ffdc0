""".dockerignore: reading the patterns (dockerignore.ReadAll) and matching paths against them
(fileutils.PatternMatcher of dockerd 20.10): `*` and `?` within one path element, `**` across
any number of them, `!` exceptions (the last matching pattern wins), a pattern that matches a
parent directory matches everything below it. Patterns become regular expressions the way Go's
code builds them and are run by RE2, so a hostile pattern costs linear time.

`apply` removes what the patterns exclude from an unpacked build context: the docker CLI and
docker-py already leave those files out of the tar, a raw client may not, and the result is the
same either way.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from dataclasses import dataclass

import re2

from proto.docker.errors import InvalidParameter

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


@dataclass
class _Pattern:
    text: str
    exclusion: bool
    dirs: list[str]
    regex: object | None


def read_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore file, cleaned as dockerd cleans them."""
    out: list[str] = []
    for raw in text.removeprefix("\ufeff").split("\n"):
        if raw.startswith("#"):
            continue
        pattern = raw.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            if pattern.startswith("//"):
                pattern = "/" + pattern.lstrip("/")
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


def _regex(pattern: str) -> str:
    out = ["^"]
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch in ".$":
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append("\\" + pattern[i])
                i += 1
            else:
                out.append("\\\\")
        else:
            out.append(ch)
    out.append("$")
    return "".join(out)


class Matcher:
    """fileutils.PatternMatcher over cleaned patterns (see `read_patterns`)."""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns: list[_Pattern] = []
        for text in patterns:
            exclusion = text.startswith("!")
            body = text[1:] if exclusion else text
            if exclusion and not body:
                raise InvalidParameter('illegal exclusion pattern: "!"')
            try:
                regex = re2.compile(_regex(posixpath.normpath(body)), _OPTIONS)
            except re2.error:
                raise InvalidParameter("syntax error in pattern") from None
            self.patterns.append(_Pattern(body, exclusion, body.split("/"), regex))

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def matches(self, path: str) -> bool:
        """Whether the context-relative `path` is excluded."""
        matched = False
        parent = posixpath.dirname(path) or "."
        parent_dirs = parent.split("/")
        for p in self.patterns:
            hit = p.regex.search(path) is not None  # type: ignore[attr-defined]
            if not hit and parent != "." and len(p.dirs) <= len(parent_dirs):
                prefix = "/".join(parent_dirs[: len(p.dirs)])
                hit = p.regex.search(prefix) is not None  # type: ignore[attr-defined]
            if hit:
                matched = not p.exclusion
        return matched


def apply(root: str, matcher: Matcher, keep: set[str]) -> None:
    """Remove what `matcher` excludes from the tree at `root` (never following a link);
    the context-relative paths in `keep` (the Dockerfile) stay."""
    if not matcher.patterns:
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _prune(fd, "", matcher, keep)
    finally:
        os.close(fd)


def _prune(dirfd: int, rel: str, matcher: Matcher, keep: set[str]) -> None:
    with os.scandir(dirfd) as entries:
        names = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)
    for name, is_dir in names:
        path = f"{rel}/{name}" if rel else name
        excluded = path not in keep and matcher.matches(path)
        if is_dir and (not excluded or matcher.has_exclusions):
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
            try:
                _prune(sub, path, matcher, keep)
                empty = not os.listdir(sub)
            finally:
                os.close(sub)
            if excluded and empty:
                os.rmdir(name, dir_fd=dirfd)
        elif excluded:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dirfd)
            else:
                os.unlink(name, dir_fd=dirfd)
