"""What every part of the agent's gRPC service shares: `ServiceBase` (the state the area mixins
of `agent.service.AgentService` work on), the `rpc` decorator that ends a call with its Docker
error, JSON in and out, the options-first rule of client streams, and the size of data messages.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from agent.events import EventBus
from agent.fencing import Fence
from agent.image_records import ImagesReporter
from proto import rpc_errors as errors
from proto.docker.errors import DockerError, InvalidParameter
from runtime.containers import Runtime

# The name the service has always logged under, whichever module an RPC now lives in.
log = logging.getLogger("agent.service")

# The most bytes one data message carries, whichever way it goes.
CHUNK = 64 * 1024


class ServiceBase:
    """The state `AgentService` is built with; each area mixin derives from this."""

    rt: Runtime
    events: EventBus
    info_extra: dict[str, Any]
    fence: Fence | None  # None: a server without registration (tests)
    # Waits until the status records carry the changes made so far (StatusReporter.flush);
    # None: a server without a reporter (tests).
    status_flush: Callable[[], Awaitable[None]] | None
    # The node's images record: an RPC that changed images returns once it is written.
    image_records: ImagesReporter | None = None

    async def reported(self) -> None:
        """End of a call that changed a container: its status record is written first, as
        `docker ps` reads the records (docs/manager.md)."""
        if self.status_flush is not None:
            await self.status_flush()


async def _images_written(service: ServiceBase, since: int) -> None:
    if service.image_records is not None:
        await service.image_records.written(since)


def _generation(service: ServiceBase) -> int:
    return service.image_records.generation if service.image_records is not None else 0


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def loads(data: bytes, default: Any) -> Any:
    if not data:
        return default
    try:
        return json.loads(data)
    except ValueError as err:
        raise InvalidParameter(f"invalid JSON: {err}") from None


def rpc(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn DockerErrors (and unexpected failures, as 500) into the RPC's error status."""
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream(self: ServiceBase, request: Any, context: Any) -> AsyncIterator[Any]:
            since = _generation(self)
            try:
                async for item in fn(self, request, context):
                    yield item
                await _images_written(self, since)
            except DockerError as err:
                await _images_written(self, since)  # a part may have changed (rmi of several)
                await errors.abort(context, err)
            except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as err:
                log.exception("%s failed", fn.__name__)
                await errors.abort(context, DockerError(str(err) or type(err).__name__, 500))

        return stream

    @functools.wraps(fn)
    async def unary(self: ServiceBase, request: Any, context: Any) -> Any:
        since = _generation(self)
        try:
            reply = await fn(self, request, context)
            await _images_written(self, since)
            return reply
        except DockerError as err:
            await _images_written(self, since)  # a part may have changed (rmi of several)
            await errors.abort(context, err)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as err:
            log.exception("%s failed", fn.__name__)
            await errors.abort(context, DockerError(str(err) or type(err).__name__, 500))

    return unary


async def data_chunks(requests: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """The `data` of each message of a client stream."""
    async for msg in requests:
        yield msg.data


async def first_options(requests: AsyncIterator[Any], what: str) -> Any:
    """The options a client stream must open with (`what` names the call in the error)."""
    try:
        msg = await anext(requests)
    except StopAsyncIteration:
        raise InvalidParameter(f"{what}: missing options message") from None
    if msg.WhichOneof("input") != "options":
        raise InvalidParameter(f"{what}: the first message must carry the options")
    return msg.options
