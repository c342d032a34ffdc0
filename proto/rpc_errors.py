"""Carry a DockerError across gRPC unchanged: HTTP status and message, both ways.

The server aborts with a gRPC code derived from the HTTP status (for generic gRPC tooling) and
trailing metadata holding the exact status and message, which the manager turns back into the
same DockerError with `raise_for_rpc_error`. The message travels as `-bin` metadata because
Docker messages may contain any UTF-8 (paths, names) and plain metadata must be ASCII.
"""

from __future__ import annotations

import grpc

from proto.docker.errors import DockerError

STATUS_KEY = "docker-status"
MESSAGE_KEY = "docker-message-bin"

_CODE_BY_HTTP: dict[int, grpc.StatusCode] = {
    304: grpc.StatusCode.ALREADY_EXISTS,  # "container already started/stopped"
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

# Without docker metadata (a transport failure, a deadline): the HTTP status a Docker client sees.
_HTTP_BY_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def grpc_code(status: int) -> grpc.StatusCode:
    if status in _CODE_BY_HTTP:
        return _CODE_BY_HTTP[status]
    if 400 <= status < 500:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


def trailing_metadata(err: DockerError) -> tuple[tuple[str, str | bytes], ...]:
    return ((STATUS_KEY, str(err.status)), (MESSAGE_KEY, err.message.encode()))


async def abort(context: grpc.aio.ServicerContext, err: DockerError) -> None:
    """End the RPC with `err` (raises, as `context.abort` does)."""
    await context.abort(grpc_code(err.status), err.message, trailing_metadata(err))


def error_from_rpc(exc: grpc.RpcError) -> DockerError:
    """The DockerError an RPC failure stands for (exact when the agent sent its metadata)."""
    status: int | None = None
    message: str | None = None
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == STATUS_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            if text.isdigit():
                status = int(text)
        elif key == MESSAGE_KEY:
            message = value.decode(errors="replace") if isinstance(value, bytes) else value
    if status is not None and message is not None:
        return DockerError(message, status)
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(code)
    return DockerError(details, _HTTP_BY_CODE.get(code, 500))


def raise_for_rpc_error(exc: grpc.RpcError) -> DockerError:
    """For `except grpc.RpcError as exc: raise raise_for_rpc_error(exc) from None`.

    Named for the call site; it returns the error so the caller's `raise` stays visible.
    """
    return error_from_rpc(exc)
