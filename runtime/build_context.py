"""A build's context: the client's tar unpacked into a private directory by the `docker cp`
unpacker (runtime/archive_unpack.put_archive: dockerd's breakout checks, every entry created
inside the directory), the Dockerfile read from inside it (`-f` may name any path in the
context; a symlink cannot lead out), and .dockerignore applied (runtime/dockerignore.py).
"""

from __future__ import annotations

import os
import shutil
from typing import BinaryIO

from proto.docker.errors import DockerError, InvalidParameter
from runtime import dockerignore, inroot
from runtime.archive_unpack import put_archive
from runtime.dockerfile_parse import ParseError, ParseResult, parse

_MAX_DOCKERFILE = 16 << 20


def unpack(src: BinaryIO, work: str) -> str:
    """The context tar from `src` unpacked into `<work>/context`; returns that path."""
    root = os.path.join(work, "context")
    os.mkdir(root, 0o700)
    put_archive(root, "/", src)
    return root


def _read_in_root(root: str, path: str) -> str | None:
    with inroot.opened(inroot.open_root(root)) as rootfd:
        try:
            fd = inroot.open_in_root(rootfd, path, os.O_RDONLY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            raise DockerError(f"read {path}: is a directory", 500) from None
        with os.fdopen(fd, "rb") as f:
            try:
                data = f.read(_MAX_DOCKERFILE + 1)
            except IsADirectoryError:
                raise DockerError(f"read {path}: is a directory", 500) from None
    if len(data) > _MAX_DOCKERFILE:
        raise InvalidParameter(f"the Dockerfile ({path}) is too large")
    return data.decode("utf-8", "surrogateescape")


def read_dockerfile(root: str, name: str) -> ParseResult:
    """withDockerfileFromContext: the Dockerfile (or `dockerfile` for the default name),
    parsed, then .dockerignore applied to the rest of the context."""
    text = _read_in_root(root, name)
    if text is None and name == "Dockerfile":
        lower = _read_in_root(root, "dockerfile")
        if lower is not None:
            name, text = "dockerfile", lower
    if text is None:
        raise DockerError(f"Cannot locate specified Dockerfile: {name}", 500)
    if not text:
        raise InvalidParameter(f"the Dockerfile ({name}) cannot be empty")
    try:
        result = parse(text)
    except ParseError as e:
        raise InvalidParameter(f"failed to parse {name}: {e}") from None
    ignore = _read_in_root(root, ".dockerignore")
    if ignore is not None:
        matcher = dockerignore.Matcher(dockerignore.read_patterns(ignore))
        dockerignore.apply(root, matcher, set())
    return result


def remove(work: str) -> None:
    shutil.rmtree(work, ignore_errors=True)
