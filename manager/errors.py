"""Turn every failure into the answer dockerd would give: status + `{"message": …}`.

Runtime/agent errors keep their status and wording; unknown paths get dockerd's 404
`page not found`; Docker endpoints flotilla deliberately does not serve (swarm mode) get a 501
that says so; anything unexpected becomes a 500 with a message, never a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
from aiohttp import web

from manager import gojson
from manager.gojson import GoType
from manager.versioning import Handler, split_version
from proto.docker.errors import DockerError, InvalidParameter
from proto.rpc_errors import raise_for_rpc_error

log = logging.getLogger(__name__)

# Engine API JSON bodies are small (a create body is a few KiB); dockerd streams its decode,
# we read the body whole, so a bound keeps one request from taking the manager's memory.
MAX_JSON_BODY = 16 << 20

# Swarm-mode endpoints of the Engine API: known, but not part of classic Swarm. (Not /plugins:
# `docker inspect X` asks /plugins/X/json last and needs a 404 there.)
UNSERVED_PREFIXES = (
    "/services",
    "/nodes",
    "/swarm",
    "/secrets",
    "/configs",
    "/tasks",
    "/session",
    "/grpc",
)


def error_response(status: int, message: str) -> web.Response:
    # Byte-for-byte what dockerd's json.Encoder writes: compact, with a trailing newline.
    body = json.dumps({"message": message}, separators=(",", ":"), ensure_ascii=False) + "\n"
    # Exactly "application/json": the docker CLI only parses the message when it matches.
    return web.Response(
        body=body.encode(), status=status, headers={"Content-Type": "application/json"}
    )


def unserved_message(path: str) -> str | None:
    for prefix in UNSERVED_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return (
                f"{prefix} is not supported by flotilla: it serves classic Swarm's API "
                "(containers, images, volumes, networks), not swarm mode"
            )
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DockerError as e:
        return _docker_error(e)
    except grpc.RpcError as e:
        return _docker_error(raise_for_rpc_error(e))
    except ConnectionResetError:
        raise  # the client is gone: nothing to answer
    except web.HTTPException as e:
        if e.status in (404, 405):
            _, path = split_version(request.path)
            unserved = unserved_message(path)
            if unserved is not None:
                return error_response(501, unserved)
            return error_response(404, "page not found")
        if e.status >= 400:
            return error_response(e.status, e.text or e.reason)
        raise
    except Exception as e:  # noqa: BLE001 - a client gets a message, the log gets the trace
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, str(e) or type(e).__name__)


def _docker_error(e: DockerError) -> web.Response:
    if e.status == 304:
        return web.Response(status=304)
    return error_response(e.status, e.message)


async def read_json(request: web.Request, schema: GoType, default: Any = None) -> Any:
    """The request body decoded as dockerd 28 decodes it into `schema`'s Go struct: 400
    `invalid JSON: …` in encoding/json's words for malformed JSON or a wrong type, struct keys
    spelt as Go's fields. An empty body (or `null`) is `default`, Go's zero value.

    Bodies are read whole, so they are bounded (MAX_JSON_BODY, through the app's
    client_max_size); uploads (load, import, cp) are streamed and never pass here."""
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise _too_large()
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large() from None
    try:
        value = gojson.loads(raw)
    except EOFError:
        return default
    except gojson.GoJSONError as e:
        if str(e) == gojson.TRAILING:
            raise InvalidParameter(gojson.TRAILING) from None  # dockerd's own words, bare
        raise InvalidParameter(f"invalid JSON: {e}") from None
    try:
        value = gojson.check(value, schema)
    except gojson.GoJSONError as e:
        raise InvalidParameter(f"invalid JSON: {e}") from None
    return default if value is None else value


def _too_large() -> DockerError:
    # Go's http.MaxBytesReader words; 413 rather than the 500 dockerd would make of them.
    return DockerError(f"http: request body too large (limit {MAX_JSON_BODY} bytes)", 413)


def bool_param(request: web.Request, name: str, default: bool = False) -> bool:
    """Docker's boolean query values: 1/true/True; 0/false/empty are false."""
    value = request.query.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no")


def int_param(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidParameter(f"invalid value for {name}: {value!r}") from None
