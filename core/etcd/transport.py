"""HTTP to etcd's JSON gateway: one POST per call, a deadline per attempt,
and failover between endpoints.

Failover rules (`Transport.call`):
- stick with the last endpoint that answered;
- a failure before the request was sent (refused, reset, TLS handshake or
  certificate failure, connect timeout) tries the next endpoint;
- a request sent and not answered (timeout, connection lost) is retried on
  the next endpoint if it is a read, and raises `EtcdOutcomeUnknown` if it
  is a write (it may have been applied: never retried silently);
- an answer of gRPC UNAVAILABLE (no leader, request timed out) counts as no
  answer from that member: a read tries the next one, a write tries it only
  when etcd refused it before proposing ("no leader"), else the outcome is
  unknown;
- when no endpoint answers: `EtcdUnavailable`.

Idle keep-alive connections are pooled per endpoint; one that has turned
readable while idle (its member closed or died) is dropped before use, so a
stale socket is not mistaken for a write that got no answer.
"""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.etcd import wire
from core.etcd.errors import (
    UNAVAILABLE,
    UNKNOWN,
    EtcdError,
    EtcdOutcomeUnknown,
    EtcdUnavailable,
    maybe_applied,
)

log = logging.getLogger(__name__)
_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class _NotSent(Exception):
    """The request did not leave: another endpoint may take it."""


class _NoAnswer(Exception):
    """The request was sent and no answer came."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    https: bool
    host: str
    port: int

    @staticmethod
    def parse(url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
            raise ValueError(f"etcd endpoint must be http(s)://host:port, not {url!r}")
        return Endpoint(url.rstrip("/"), parts.scheme == "https", parts.hostname, parts.port)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _arm(sock: socket.socket | None, deadline: float) -> None:
    """Give the next socket operation what is left of the attempt's deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    if sock is not None:
        sock.settimeout(left)


def decode(status: int, data: bytes) -> wire.Json:
    """The JSON object of an answer; an `EtcdError` when it is not one (a
    proxy's or a wrong path's plain-text page)."""
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise EtcdError(UNKNOWN, f"HTTP {status}, not a JSON object: {data[:200]!r}")
    if status != 200 and "error" not in body:
        raise EtcdError(UNKNOWN, f"HTTP {status}: {data[:200]!r}")
    return body


class Stream:
    """A streaming answer (watch): newline-delimited JSON objects."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._sock = conn.sock
        self._response = response

    def next_message(self, timeout_s: float) -> wire.Json | None:
        """The next object, or None when none came within `timeout_s` or the
        stream ended or broke (the stream is closed then)."""
        try:
            if self._sock is not None:
                self._sock.settimeout(timeout_s)
            while True:
                line = self._response.readline()
                if not line:
                    break
                if line.strip():
                    return decode(200, line)
        except (OSError, http.client.HTTPException, ValueError):
            pass
        self.close()
        return None

    def close(self) -> None:
        self._response.close()
        self._conn.close()


class Transport:
    def __init__(
        self,
        endpoints: list[str],
        timeout_s: float,
        ssl_context: ssl.SSLContext | None,
        server_name: str = "",
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        self.endpoints = [Endpoint.parse(u) for u in endpoints]
        self.timeout_s = timeout_s
        self._ssl_context = ssl_context
        self.server_name = server_name  # https: etcd's certificate must also name this (a DNS SAN)
        self._current = 0
        self._idle: dict[int, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    @property
    def current(self) -> str:
        """The endpoint the next call tries first."""
        return self.endpoints[self._current].url

    def call(self, path: str, body: wire.Json, *, write: bool) -> wire.Json:
        """POST `body` to `path`; the answer's JSON (see the module's rules)."""
        payload = json.dumps(body).encode()
        failures: list[str] = []
        start = self._current
        for step in range(len(self.endpoints)):
            i = (start + step) % len(self.endpoints)
            url = self.endpoints[i].url
            try:
                answer = self._attempt(i, path, payload)
            except _NotSent as exc:
                failures.append(f"{url}: not sent: {exc}")
                continue
            except _NoAnswer as exc:
                if write:  # the next call tries another member first (this one may be stuck)
                    self._current = (i + 1) % len(self.endpoints)
                    raise EtcdOutcomeUnknown(f"{path} sent to {url}, no answer: {exc}") from None
                failures.append(f"{url}: no answer: {exc}")
                continue
            err = wire.error_of(answer)
            if err is not None and err.code == UNAVAILABLE:
                if write and maybe_applied(err):
                    raise EtcdOutcomeUnknown(f"{path} at {url}: {err.message}") from None
                failures.append(f"{url}: {err.message}")
                continue
            if i != start:
                log.info("etcd: now using %s (after %s)", url, "; ".join(failures))
            self._current = i
            if err is not None:
                raise err
            return answer
        raise EtcdUnavailable(f"no etcd endpoint answered {path}: {'; '.join(failures)}")

    def open_stream(self, path: str, body: wire.Json) -> tuple[Stream, wire.Json]:
        """Start a streaming call on its own connection; the stream and its
        first message (within the per-attempt deadline), with the same
        failover as a read."""
        payload = json.dumps(body).encode()
        failures: list[str] = []
        start = self._current
        for step in range(len(self.endpoints)):
            i = (start + step) % len(self.endpoints)
            deadline = time.monotonic() + self.timeout_s
            try:
                conn = self._connect(i, deadline)
            except _NotSent as exc:
                failures.append(f"{self.endpoints[i].url}: not sent: {exc}")
                continue
            try:
                _arm(conn.sock, deadline)
                conn.request("POST", path, body=payload, headers=_HEADERS)
                _arm(conn.sock, deadline)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                failures.append(f"{self.endpoints[i].url}: {_describe(exc)}")
                continue
            if response.status != 200:
                data = response.read()
                conn.close()
                err = wire.error_of(decode(response.status, data))
                err = err or EtcdError(UNKNOWN, f"HTTP {response.status}")
                if err.code != UNAVAILABLE:
                    raise err
                failures.append(f"{self.endpoints[i].url}: {err.message}")
                continue
            stream = Stream(conn, response)
            first = stream.next_message(max(deadline - time.monotonic(), 0.001))
            if first is None:
                failures.append(f"{self.endpoints[i].url}: no first message")
                continue
            self._current = i
            return stream, first
        raise EtcdUnavailable(f"no etcd endpoint answered {path}: {'; '.join(failures)}")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # -- one attempt ----------------------------------------------------------

    def _attempt(self, i: int, path: str, payload: bytes) -> wire.Json:
        deadline = time.monotonic() + self.timeout_s
        conn = self._checkout(i, deadline)
        sock = conn.sock
        try:
            _arm(sock, deadline)
            conn.request("POST", path, body=payload, headers=_HEADERS)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _NotSent(_describe(exc)) from None
        try:
            _arm(sock, deadline)
            response = conn.getresponse()
            _arm(sock, deadline)
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _NoAnswer(_describe(exc)) from None
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.setdefault(i, []).append(conn)
        return decode(response.status, data)

    def _checkout(self, i: int, deadline: float) -> http.client.HTTPConnection:
        with self._lock:
            idle = self._idle.get(i, [])
            while idle:
                conn = idle.pop()
                if conn.sock is not None and not _readable(conn.sock):
                    return conn
                conn.close()  # its member closed it (or died) while it was idle
        return self._connect(i, deadline)

    def _connect(self, i: int, deadline: float) -> http.client.HTTPConnection:
        ep = self.endpoints[i]
        left = max(deadline - time.monotonic(), 0.001)
        conn: http.client.HTTPConnection
        if ep.https:
            context = self._ssl_context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(ep.host, ep.port, timeout=left, context=context)
        else:
            conn = http.client.HTTPConnection(ep.host, ep.port, timeout=left)
        try:
            conn.connect()
        except OSError as exc:  # refused, unreachable, TLS failure (ssl.SSLError is an OSError)
            conn.close()
            raise _NotSent(_describe(exc)) from None
        if ep.https and self.server_name and not _names(conn.sock, self.server_name):
            conn.close()  # another certificate of the same CA: not etcd
            raise _NotSent(f"its certificate does not name {self.server_name}")
        return conn


def _readable(sock: socket.socket) -> bool:
    """An idle connection with something to read (its member closed it, or
    died). poll, not select: select fails on descriptors past 1023."""
    p = select.poll()
    p.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(p.poll(0))


def _names(sock: socket.socket | None, name: str) -> bool:
    """Whether the peer's (verified) certificate has DNS SAN `name`."""
    cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
    sans = cert.get("subjectAltName", ()) if cert else ()
    return ("DNS", name) in [tuple(san) for san in sans]
