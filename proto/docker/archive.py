"""The `X-Docker-Container-Path-Stat` header of the archive endpoints."""

from __future__ import annotations

import base64
import json
from typing import Any


def encode_stat_header(d: dict[str, Any]) -> str:
    """The header's value: base64 (std alphabet) of the JSON."""
    raw = json.dumps(d, separators=(",", ":")).encode()
    return base64.b64encode(raw).decode("ascii")


def decode_stat_header(value: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(value))
