"""Building a gRPC server the Tailrace way: configured limits, the standard
health service, and one interceptor that maps domain errors to statuses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from core.errors import InvalidArgumentError, MessageTooLargeError, TailraceError
from core.grpc_status import CONTROLLER_LEADER_KEY, ERROR_CODE_KEY, MASTER_ADDRESS_KEY, grpc_status_for

log = logging.getLogger(__name__)
HEALTH_PREFIX = "/grpc.health.v1.Health/"


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None, limit: int = 0) -> Callable[[bytes], Any] | None:
    """The request parser, which never raises inside gRPC; with `limit`, a
    request larger than it is refused before it is decoded (decoding is
    where an oversized request costs memory: a map of a million properties)."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        if limit and len(data) > limit:
            return _Undecodable(MessageTooLargeError(f"request of {len(data)} bytes exceeds {limit}"))
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf DecodeError and friends
            return _Undecodable(exc)

    return parse


def _abort(context: grpc.ServicerContext, err: TailraceError) -> None:
    metadata = [(ERROR_CODE_KEY, err.code)]
    master = getattr(err, "master_address", "")
    if master:
        metadata.append((MASTER_ADDRESS_KEY, master))
    leader = getattr(err, "leader_address", "")
    if leader:
        metadata.append((CONTROLLER_LEADER_KEY, leader))
    context.set_trailing_metadata(tuple(metadata))
    context.abort(grpc_status_for(err), str(err))


class WrappingInterceptor(grpc.ServerInterceptor):
    """An interceptor that wraps each method's handler once (`_wrap`) and
    leaves the health service as grpc-health made it (`_wrap_health` may
    only check its requests): its `Watch` is non-blocking, and a wrapping
    generator would hold a server thread per open stream (anyone could open
    enough to starve every other call)."""

    def __init__(self) -> None:
        # gRPC asks for the handler on every call; the wrapping (this one and
        # the interceptors inside) is the same for every call of a method
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = (
            self._wrap_health(handler) if method.startswith(HEALTH_PREFIX) else self._wrap(handler, method)
        )
        if len(self._wrapped) < 256:  # only methods a service has
            self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        raise NotImplementedError

    def _wrap_health(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        return handler


class ErrorInterceptor(WrappingInterceptor):
    """TailraceError -> its gRPC status (+ code in trailing metadata); a request
    that does not decode -> INVALID_ARGUMENT; anything else -> INTERNAL, logged.
    Unary and streaming methods alike (an error raised while a stream is
    being produced or its requests are read ends the stream the same way).
    Handlers raise; they never call `context.abort` themselves."""

    def __init__(self, request_limits: Mapping[str, int] | None = None) -> None:
        super().__init__()
        self.request_limits = dict(request_limits or {})

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        deserializer = _lenient(handler.request_deserializer, self.request_limits.get(method, 0))
        serializer = handler.response_serializer

        def fail(context: grpc.ServicerContext, exc: Exception) -> None:
            if isinstance(exc, TailraceError):
                _abort(context, exc)
            log.error("%s failed", method, exc_info=exc)
            _abort(context, TailraceError("internal error; see the broker log"))

        def checked(request: Any) -> Any:
            if isinstance(request, _Undecodable):
                if isinstance(request.error, TailraceError):
                    raise request.error
                raise InvalidArgumentError(f"request does not decode: {request.error}")
            return request

        def checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
            for r in requests:
                yield checked(r)

        if handler.unary_unary is not None:
            unary_unary = handler.unary_unary

            def uu(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return unary_unary(checked(request), context)
                except Exception as exc:
                    fail(context, exc)
                return None  # unreachable: abort raises

            return grpc.unary_unary_rpc_method_handler(uu, deserializer, serializer)
        if handler.unary_stream is not None:
            unary_stream = handler.unary_stream

            def us(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from unary_stream(checked(request), context)
                except Exception as exc:
                    fail(context, exc)

            return grpc.unary_stream_rpc_method_handler(us, deserializer, serializer)
        if handler.stream_stream is not None:
            stream_stream = handler.stream_stream

            def ss(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from stream_stream(checked_stream(requests), context)
                except Exception as exc:
                    fail(context, exc)

            return grpc.stream_stream_rpc_method_handler(ss, deserializer, serializer)
        return handler  # stream-unary: none of ours

    def _wrap_health(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        """The health service's own behaviour, called directly (no generator
        of ours around `Watch`, which stays non-blocking), with only its
        request parsing made lenient: bytes that do not decode are
        INVALID_ARGUMENT, not gRPC's INTERNAL."""
        deserializer = _lenient(handler.request_deserializer)

        def decoded(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                _abort(context, InvalidArgumentError(f"request does not decode: {request.error}"))
            return request

        if handler.unary_unary is not None:
            check = handler.unary_unary

            def uu(request: Any, context: grpc.ServicerContext) -> Any:
                return check(decoded(request, context), context)

            return grpc.unary_unary_rpc_method_handler(uu, deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            watch = handler.unary_stream

            def us(request: Any, context: grpc.ServicerContext, *callback: Any) -> Any:
                return watch(decoded(request, context), context, *callback)

            # grpc passes a send-callback (no server thread held) to a behaviour marked so
            us.experimental_non_blocking = getattr(watch, "experimental_non_blocking", False)  # type: ignore[attr-defined]
            return grpc.unary_stream_rpc_method_handler(us, deserializer, handler.response_serializer)
        return handler


def build_server(
    max_workers: int,
    max_concurrent_rpcs: int,
    max_message_bytes: int,
    guards: Sequence[grpc.ServerInterceptor] = (),
    max_receive_bytes: int = 0,
    request_limits: Mapping[str, int] | None = None,
    options: Sequence[tuple[str, int]] = (),
) -> tuple[grpc.Server, health.HealthServicer]:
    """A server with the error interceptor (outermost) and the `guards`
    inside it, in order (the security guard, then a broker's role guard:
    core/security/guard.py, core/access.py), so their refusals are mapped too.
    `options`: more gRPC channel arguments (keepalive)."""
    interceptors: list[grpc.ServerInterceptor] = [ErrorInterceptor(request_limits), *guards]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_receive_bytes or max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
            *options,
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


def set_serving(
    health_servicer: health.HealthServicer, serving: bool, service: str = "tailrace.v1.Broker"
) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    health_servicer.set("", status)
    health_servicer.set(service, status)
