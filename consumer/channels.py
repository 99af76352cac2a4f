"""The one place client channels are opened, sync and `grpc.aio`.

TLS when the security has a CA (the server's certificate verified against
it, and against `server_name` instead of the dialed host when that is set),
plaintext otherwise; every call signed when it has an account
(consumer/signer.py). Over plaintext a signature is sent to loopback only:
it reveals no secret, but a header seen on the wire could be replayed (for
the same method, within the servers' skew window), so a signed client
refuses a plaintext channel to any other host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from consumer.profile import ClientSecurity
from consumer.signer import Signature, SignedAioChannel, SignedChannel
from core.errors import ConfigError
from core.security.config import is_loopback

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


def _check_exposure(address: str, security: ClientSecurity) -> None:
    if security.signed and not security.tls and not is_loopback(address.rpartition(":")[0]):
        raise ConfigError(
            "ca_file",
            f"signed calls to {address} without TLS: anyone on the path could replay them; "
            "give the profile the cluster's ca_file",
        )


def _credentials(security: ClientSecurity) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=security.ca_pem)


def open_channel(address: str, security: ClientSecurity, options: Options = ()) -> grpc.Channel:
    """A sync channel to `address` (`options`: gRPC channel arguments)."""
    _check_exposure(address, security)
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
    _check_exposure(address, security)
    opts = _options(security, options)
    if security.tls:
        channel = grpc.aio.secure_channel(address, _credentials(security), options=opts)
    else:
        channel = grpc.aio.insecure_channel(address, options=opts)
    if not security.signed:
        return channel
    return SignedAioChannel(channel, Signature(security.access_key, security.secret_key))
