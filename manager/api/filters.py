"""Docker's `filters` query parameter, parsed and checked the same way on every endpoint."""

from __future__ import annotations

import json
from collections.abc import Collection

from aiohttp import web

from manager.errors import go_json_error
from proto.docker.errors import DockerError, InvalidParameter


def parse_filters(raw: str | None) -> dict[str, list[str]]:
    """Docker's `filters` query: {"key": ["v"]} or the older {"key": {"v": true}}."""
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DockerError(
            go_json_error(raw, e).replace("beginning of value", "beginning of object key string")
            if raw.lstrip().startswith("{")
            else go_json_error(raw, e),
            500,
        ) from None
    if not isinstance(doc, dict):
        raise InvalidParameter("invalid filter format")
    out: dict[str, list[str]] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out[key] = [k for k, v in value.items() if v]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        else:
            out[key] = [str(value)]
    return out


def request_filters(request: web.Request, known: Collection[str]) -> dict[str, list[str]]:
    """The request's filters; dockerd's 400 for a key the endpoint does not know."""
    filters = parse_filters(request.query.get("filters"))
    for key in filters:
        if key not in known:
            raise InvalidParameter(f"Invalid filter '{key}'")
    return filters
