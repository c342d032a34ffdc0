"""API versions: `/v1.NN/…` and unversioned paths, and dockerd's headers and version errors."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

API_VERSION = "1.41"  # what dockerd 20.10 advertises; CLI 28 and docker-py 7 negotiate to it
MIN_API_VERSION = "1.12"
VERSION_RE = re.compile(r"^/v(\d+(?:\.\d+)?)(/.*)$")
VERSION_KEY = web.RequestKey("api_version", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@functools.cache  # read from the installed metadata once: it was ~9 % of a create's CPU
def flotilla_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flotilla")
    except PackageNotFoundError:
        return "0.0.0-dev"


def server_version() -> str:
    """The server's version as classic Swarm words its own (`swarm/1.2.9`): product/version."""
    return f"flotilla/{flotilla_version()}"


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def split_version(path: str) -> tuple[str | None, str]:
    """`/v1.41/containers/json` -> ("1.41", "/containers/json"); unversioned -> (None, path)."""
    m = VERSION_RE.match(path)
    if not m:
        return None, path
    return m.group(1), m.group(2)


def version_error(version: str) -> web.Response | None:
    """dockerd's answer to a version outside [MIN, MAX], or None when it is served."""
    if _key(version) > _key(API_VERSION):
        return web.json_response(
            {
                "message": f"client version {version} is too new. "
                f"Maximum supported API version is {API_VERSION}"
            },
            status=400,
        )
    if _key(version) < _key(MIN_API_VERSION):
        # dockerd writes this one with http.Error: plain text, not JSON.
        return web.Response(
            status=400,
            text=f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version\n",
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )
    return None


@web.middleware
async def version_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    version, _ = split_version(request.path)
    if version is not None:
        error = version_error(version)
        if error is not None:
            return error
    request[VERSION_KEY] = version or API_VERSION
    return await handler(request)


async def add_engine_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the headers dockerd puts on every answer."""
    response.headers.setdefault("Api-Version", API_VERSION)
    response.headers.setdefault("Ostype", "linux")
    response.headers.setdefault("Docker-Experimental", "false")
    response.headers["Server"] = f"{server_version()} (linux)"


def versioned(path: str) -> list[str]:
    """Both route paths dockerd serves for `path`."""
    return [path, r"/{api_version:v[0-9]+(?:\.[0-9]+)?}" + path]


Route = tuple[str, str, Handler]


def add_versioned_routes(app: web.Application, routes: list[Route]) -> None:
    """Register each (method, path, handler) under both paths dockerd serves."""
    for method, path, handler in routes:
        for p in versioned(path):
            app.router.add_route(method, p, handler)
