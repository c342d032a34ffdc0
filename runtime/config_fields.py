"""Typed reads of a decoded JSON create body, failing with Go's `json: cannot unmarshal …`
errors as dockerd's decoder does.
"""

from __future__ import annotations

from typing import Any

from proto.docker.errors import InvalidParameter

_GO_TYPES = {bool: "bool", int: "number", float: "number", str: "string", list: "array"}


def type_error(value: Any, gotype: str) -> InvalidParameter:
    jtype = "object" if isinstance(value, dict) else _GO_TYPES.get(type(value), "value")
    return InvalidParameter(f"json: cannot unmarshal {jtype} into Go value of type {gotype}")


def get_str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise type_error(v, "string")
    return v


def get_bool(d: dict[str, Any], key: str) -> bool:
    v = d.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise type_error(v, "bool")
    return v


def get_int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise type_error(v, "int64")
    if isinstance(v, float) and not v.is_integer():
        raise type_error(v, "int64")
    return int(v)


def get_opt_int(d: dict[str, Any], key: str) -> int | None:
    return None if d.get(key) is None else get_int(d, key)


def get_strlist(d: dict[str, Any], key: str) -> list[str] | None:
    """A []string field; StrSlice fields (Cmd, Entrypoint) also accept a bare string."""
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, str) and key in ("Cmd", "Entrypoint", "Shell"):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise type_error(v, "[]string")
    return list(v)


def get_dict(d: dict[str, Any], key: str) -> dict[str, Any] | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise type_error(v, "map[string]interface {}")
    return v
