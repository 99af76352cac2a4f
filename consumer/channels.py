"""The one place client channels are opened, sync and `grpc.aio`.

TLS when the security has a CA (the server's certificate verified against
it, and against `server_name` instead of the dialed host when that is set),
plaintext otherwise; every call signed when it has an account
(consumer/signer.py). Over plaintext a signature may still be sent: it is
an HMAC of the method and time, and reveals no secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from consumer.profile import ClientSecurity
from consumer.signer import Signature, SignedAioChannel, SignedChannel

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
Options = Sequence[tuple[str, Any]]
BROKER_OPTIONS: Options = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 0),
)  # what a broker connection has always had: large batches, no transparent retries


def _options(security: ClientSecurity, options: Options) -> list[tuple[str, Any]]:
    out = list(options)
    if security.tls and security.server_name:
        out.append(("grpc.ssl_target_name_override", security.server_name))
    return out


def _credentials(security: ClientSecurity) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=security.ca_pem)


def open_channel(address: str, security: ClientSecurity, options: Options = ()) -> grpc.Channel:
    """A sync channel to `address` (`options`: gRPC channel arguments)."""
    opts = _options(security, options)
    if security.tls:
        channel = grpc.secure_channel(address, _credentials(security), options=opts)
    else:
        channel = grpc.insecure_channel(address, options=opts)
    if not security.signed:
        return channel
    return SignedChannel(channel, Signature(security.access_key, security.secret_key))


def open_aio_channel(address: str, security: ClientSecurity, options: Options = ()) -> grpc.aio.Channel:
    """A `grpc.aio` channel to `address`; open it on the event loop that uses it."""
    opts = _options(security, options)
    if security.tls:
        channel = grpc.aio.secure_channel(address, _credentials(security), options=opts)
    else:
        channel = grpc.aio.insecure_channel(address, options=opts)
    if not security.signed:
        return channel
    return SignedAioChannel(channel, Signature(security.access_key, security.secret_key))
