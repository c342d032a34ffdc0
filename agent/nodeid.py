"""The node's identity: generated once, kept in `<data_root>/node-id`, so a restarted agent
comes back as the same node (Docker's engine ID format: 12 groups of 4 base32 characters)."""

from __future__ import annotations

import base64
import os
import re
import secrets

from runtime.fileio import write_atomic

FILE = "node-id"
_FORMAT = re.compile(r"^[A-Z2-7]{4}(:[A-Z2-7]{4}){11}$")


def generate() -> str:
    raw = base64.b32encode(secrets.token_bytes(30)).decode()  # 30 bytes -> 48 characters
    return ":".join(raw[i : i + 4] for i in range(0, 48, 4))


def valid(node_id: str) -> bool:
    return bool(_FORMAT.match(node_id))


def load_or_create(data_root: str) -> str:
    """Blocking (small file I/O): call once at start-up, or through asyncio.to_thread."""
    path = os.path.join(data_root, FILE)
    try:
        with open(path) as f:
            existing = f.read().strip()
        if valid(existing):
            return existing
    except FileNotFoundError:
        pass
    os.makedirs(data_root, exist_ok=True)
    node_id = generate()
    write_atomic(path, f"{node_id}\n".encode())  # a crash never leaves a half-written ID
    return node_id
