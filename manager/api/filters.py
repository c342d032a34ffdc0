"""Docker's `filters` query parameter, parsed and checked the same way on every endpoint."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from manager import gojson
from proto.docker.errors import InvalidParameter


def parse_filters(raw: str | None) -> dict[str, list[str]]:
    """Docker's `filters` query: {"key": {"v": true}} or the older {"key": ["v"]}; anything
    else is dockerd 28's 400 `invalid filter` (filters.FromJSON)."""
    if not raw:
        return {}
    try:
        doc = gojson.loads(raw.encode(), stream=False)
    except (EOFError, gojson.GoJSONError):
        raise InvalidParameter("invalid filter") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidParameter("invalid filter")
    out: dict[str, list[str]] = {}
    if all(v is None or _bool_map(v) for v in doc.values()):
        for key, value in doc.items():
            out[key] = [k for k, on in (value or {}).items() if on]
        return out
    if all(v is None or _string_list(v) for v in doc.values()):
        for key, value in doc.items():
            out[key] = list(value or [])
        return out
    raise InvalidParameter("invalid filter")


def _string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _bool_map(value: object) -> bool:
    return isinstance(value, dict) and all(v is None or isinstance(v, bool) for v in value.values())


def request_filters(request: web.Request, known: Collection[str]) -> dict[str, list[str]]:
    """The request's filters; dockerd's 400 for a key the endpoint does not know."""
    filters = parse_filters(request.query.get("filters"))
    for key in filters:
        if key not in known:
            raise InvalidParameter(f"Invalid filter '{key}'")
    return filters
