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


def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: str, default: Any) -> Any:
    """The JSON document at `path`, or `default` when there is no such file."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
