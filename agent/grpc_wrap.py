"""Wrapping a gRPC method's behaviour inside a server interceptor (grpc.aio hands interceptors
the call's details, not its context, so anything that needs the context — the peer's
certificate, the outcome — has to run inside the behaviour)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

Behavior = Callable[..., Any]


def rewrap(handler: grpc.RpcMethodHandler, wrap: Callable[[Behavior], Behavior]) -> Any:
    """`handler` with its behaviour (whichever of the four kinds it is) replaced by
    `wrap(behaviour)`."""
    for kind, make in (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ):
        behavior = getattr(handler, kind)
        if behavior:
            return make(wrap(behavior), handler.request_deserializer, handler.response_serializer)
    return handler


def around(
    behavior: Behavior,
    before: Callable[[Any], Awaitable[Any]],
    after: Callable[[Any, Any, bool], None] | None = None,
) -> Behavior:
    """`behavior` preceded by `state = await before(context)` and followed by
    `after(context, state, done)` (`done`: it ran to its end without raising). Streaming
    handlers are either async generators or coroutines that call context.write(); the wrapper
    is of the same kind, as grpc.aio drives the two differently."""
    if inspect.isasyncgenfunction(behavior):

        async def gen(request: Any, context: Any) -> AsyncIterator[Any]:
            done, state = False, None
            try:
                state = await before(context)
                async for item in behavior(request, context):
                    yield item
                done = True
            finally:
                if after is not None:
                    after(context, state, done)

        return gen

    async def call(request: Any, context: Any) -> Any:
        done, state = False, None
        try:
            state = await before(context)
            result = await behavior(request, context)
            done = True
            return result
        finally:
            if after is not None:
                after(context, state, done)

    return call


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps every method's behaviour with `wrap(method, behavior)`
    (`method`: the RPC's name, e.g. ContainerCreate)."""

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        return rewrap(handler, lambda behavior: self.wrap(method, behavior))
