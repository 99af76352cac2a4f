"""Signing every call of an account (core/security/signing.py), sync and asyncio.

The signature covers the call's full method path and the time in ms, so it
is made per call. The interception is done at the channel: a signed
channel wraps each method's multicallable when a stub is built, so the
method path is known once, and a call only adds its metadata (one HMAC,
one tuple; calls in the same millisecond to the same method share the
tuple, which would be identical anyway) and goes straight on. Decision:
not gRPC's interceptor API (`grpc.intercept_channel`, `interceptors=`),
which per call builds new call details and, in sync gRPC, a new
multicallable and a call outcome, and in `grpc.aio` a task. On loopback
unary calls (`tailrace bench signing`, a shared 2-core machine) this costs
about 5-10 % over a bare channel, sync or asyncio, part of it the two headers
on the wire (the HMAC is 2 us); the interceptor API about twice that in
sync gRPC and a little more than this in `grpc.aio`.
Everything a multicallable offers passes through: `with_call`, `.future()`
(the pull consumer's long polls), streams, and the call objects are
gRPC's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from core.security.signing import sign

Metadata = tuple[tuple[str, str], ...]


class Signature:
    """The metadata that signs a call of `method` now, cached for the
    millisecond (a tuple per method: replaced whole, so threads may race)."""

    __slots__ = ("_access_key", "_clock", "_last", "_secret_key")

    def __init__(self, access_key: str, secret_key: str, clock: Callable[[], float] = time.time) -> None:
        self._access_key = access_key
        self._secret_key = secret_key
        self._clock = clock
        self._last: dict[str, tuple[int, Metadata]] = {}

    def __call__(self, method: str, metadata: Iterable[tuple[str, Any]] | None = None) -> Metadata:
        """The call's metadata: what it had (`metadata`) and the signature."""
        now_ms = int(self._clock() * 1000)
        last = self._last.get(method)
        if last is not None and last[0] == now_ms:
            signed = last[1]
        else:
            signed = sign(self._access_key, self._secret_key, method, now_ms)
            if len(self._last) < 256 or method in self._last:  # methods are few: never grow on junk
                self._last[method] = (now_ms, signed)
        return signed if not metadata else (*metadata, *signed)


class _Signed:
    """A sync multicallable whose calls carry the signature (every kind:
    `with_call` and `future` exist where the wrapped one has them)."""

    __slots__ = ("_inner", "_method", "_signature")

    def __init__(self, inner: Any, method: str, signature: Signature) -> None:
        self._inner = inner
        self._method = method
        self._signature = signature

    # (request, timeout, metadata, credentials, wait_for_ready, compression), as gRPC's
    def __call__(self, request: Any, timeout: Any = None, metadata: Any = None, *a: Any, **kw: Any) -> Any:
        return self._inner(request, timeout, self._signature(self._method, metadata), *a, **kw)

    def with_call(self, request: Any, timeout: Any = None, metadata: Any = None, *a: Any, **kw: Any) -> Any:
        return self._inner.with_call(request, timeout, self._signature(self._method, metadata), *a, **kw)

    def future(self, request: Any, timeout: Any = None, metadata: Any = None, *a: Any, **kw: Any) -> Any:
        return self._inner.future(request, timeout, self._signature(self._method, metadata), *a, **kw)


class SignedChannel(grpc.Channel):
    """A sync channel whose every call is signed."""

    def __init__(self, channel: grpc.Channel, signature: Signature) -> None:
        self._channel = channel
        self._signature = signature

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Signed(self._channel.unary_unary(method, *args, **kwargs), method, self._signature)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Signed(self._channel.unary_stream(method, *args, **kwargs), method, self._signature)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Signed(self._channel.stream_unary(method, *args, **kwargs), method, self._signature)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Signed(self._channel.stream_stream(method, *args, **kwargs), method, self._signature)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._channel.unsubscribe(callback)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SignedChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _AioSigned:
    """A `grpc.aio` multicallable whose calls carry the signature."""

    __slots__ = ("_inner", "_method", "_signature")

    def __init__(self, inner: Any, method: str, signature: Signature) -> None:
        self._inner = inner
        self._method = method
        self._signature = signature

    def __call__(self, request: Any = None, *a: Any, metadata: Any = None, **kw: Any) -> Any:
        # no request: a stream whose messages the caller writes (`call.write`)
        return self._inner(request, *a, metadata=self._signature(self._method, metadata), **kw)


class SignedAioChannel(grpc.aio.Channel):
    """A `grpc.aio` channel whose every call is signed."""

    def __init__(self, channel: grpc.aio.Channel, signature: Signature) -> None:
        self._channel = channel
        self._signature = signature

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _AioSigned(self._channel.unary_unary(method, *args, **kwargs), method, self._signature)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _AioSigned(self._channel.unary_stream(method, *args, **kwargs), method, self._signature)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _AioSigned(self._channel.stream_unary(method, *args, **kwargs), method, self._signature)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _AioSigned(self._channel.stream_stream(method, *args, **kwargs), method, self._signature)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    async def __aenter__(self) -> SignedAioChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close(None)
