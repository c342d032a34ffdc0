"""Small durable files: atomic replace-writes and JSON reads.

A reader (or a runtime restarted after a crash) sees either the old file or the new one, never
half of one; the temp name is unique per process and thread, so concurrent writers of one path
do not clobber each other's temp file.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`, made with exactly `mode` (umask aside). Private by default:
    records hold Env secrets (dockerd writes config.v2.json and hostconfig.json 0600)."""
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with open(fd, "wb") as f:
        os.fchmod(fd, mode)
        f.write(data)
        f.flush()
        os.fsync(fd)
    os.replace(tmp, path)


def read_json(path: str, default: Any) -> Any:
    """The JSON document at `path`, or `default` when there is no such file."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
