"""Relay an agent's JSON message stream (build, push) to the client as dockerd writes it.

dockerd answers an error found before it writes anything as the HTTP status + message, and
one found later as an `errorDetail` line in the 200 stream (the CLI prints it and exits 1). The
agent's stream tells the two apart the same way: an error before its first message is the
call's status, so the first message is awaited before the response starts.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from aiohttp import web

from proto.rpc_errors import raise_for_rpc_error


async def relay(request: web.Request, call: Any) -> web.StreamResponse:
    """Answer `request` with the messages (each with a `json` field) of the streaming `call`."""
    try:
        first = await call.read()
    except grpc.RpcError as e:
        call.cancel()
        raise raise_for_rpc_error(e) from None
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        message = first
        while message is not grpc.aio.EOF:
            await response.write(message.json + b"\r\n")
            message = await call.read()
    except grpc.RpcError as e:
        err = raise_for_rpc_error(e)
        line = {"errorDetail": {"message": err.message}, "error": err.message}
        await response.write(json.dumps(line).encode() + b"\r\n")
    finally:
        call.cancel()
    await response.write_eof()
    return response
