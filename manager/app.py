"""The manager's aiohttp Application: middlewares, headers and every route."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from manager.api import (
    build,
    container_io,
    containers,
    events,
    image_push,
    images,
    login,
    networks,
    streams,
    system,
    volumes,
)
from manager.api.system import CLUSTER_KEY, SETTINGS_KEY
from manager.api_roles import role_middleware
from manager.cluster import Cluster
from manager.errors import MAX_JSON_BODY, error_middleware
from manager.node_images import image_write_middleware
from manager.versioning import add_engine_headers, version_middleware


def make_app(cluster: Cluster, settings: dict[str, Any]) -> web.Application:
    # error_middleware is outermost so refusals, version errors and handler failures share
    # one shape.
    app = web.Application(
        middlewares=[
            error_middleware,
            role_middleware,
            version_middleware,
            image_write_middleware(lambda request: request.app[CLUSTER_KEY].node_images),
        ],
        client_max_size=MAX_JSON_BODY,
    )
    app[CLUSTER_KEY] = cluster
    app[SETTINGS_KEY] = settings
    app.on_response_prepare.append(add_engine_headers)
    system.add_routes(app)
    containers.add_routes(app)
    streams.add_routes(app)
    container_io.add_routes(app)
    images.add_routes(app)
    image_push.add_routes(app)
    login.add_routes(app)
    build.add_routes(app)
    volumes.add_routes(app)
    networks.add_routes(app)
    events.add_routes(app)
    return app
