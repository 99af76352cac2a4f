"""Building a gRPC server the Tailrace way: configured limits, the standard
health service, and one interceptor that maps domain errors to statuses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from core.errors import InvalidArgumentError, TailraceError
from core.grpc_status import ERROR_CODE_KEY, grpc_status_for

log = logging.getLogger(__name__)


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf DecodeError and friends
            return _Undecodable(exc)

    return parse


def _abort(context: grpc.ServicerContext, err: TailraceError) -> None:
    context.set_trailing_metadata(((ERROR_CODE_KEY, err.code),))
    context.abort(grpc_status_for(err), str(err))


class ErrorInterceptor(grpc.ServerInterceptor):
    """TailraceError -> its gRPC status (+ code in trailing metadata); a request
    that does not decode -> INVALID_ARGUMENT; anything else -> INTERNAL, logged."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                _abort(context, InvalidArgumentError(f"request does not decode: {request.error}"))
            try:
                return inner(request, context)
            except TailraceError as err:
                _abort(context, err)
            except Exception:
                log.exception("%s failed", method)
                _abort(context, TailraceError("internal error; see the broker log"))
            return None  # unreachable: abort raises

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def build_server(
    max_workers: int, max_concurrent_rpcs: int, max_message_bytes: int
) -> tuple[grpc.Server, health.HealthServicer]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[ErrorInterceptor()],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
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
