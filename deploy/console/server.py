"""The console's HTTP(S) endpoint: static page, signed `/api`, read-only.

Routes (GET only; anything else is 405):

    /                   the page (static/index.html), /console.js, /console.css
    /api/state          everything below in one answer (what the page polls)
    /api/cluster        broker groups: brokers, roles, epochs, in-sync set, controller view
    /api/groups         consumer groups and one entry per queue (?group=G: one group)
    /api/rates          chart series: messages stored per second per topic, lag per group

**Authentication** (when the nameserver has accounts, `auth.acl_file`):
every `/api` request is signed like a gRPC call (core/security/signing.py)
with `x-tailrace-date` and `authorization: TAILRACE-HMAC-SHA256
Credential=<ak>, SignedHeaders=x-tailrace-date, Signature=...` over
"<HTTP method> <path and query>" (`GET /api/state`; a gRPC method path
starts with "/", so neither signs the other), and the account must be an
admin or a monitor (`monitor = true`: the reads the console shows, and
nothing that writes or reads a message; core/security/acl.py). Operators
sign in with a monitor account: the key the page holds then signs no
reset or delete. The page signs in the browser (Web Crypto); the secret
key never travels. Unsigned: 401; signed by neither: 403. Without accounts,
`/api` is open, like the client RPCs. The static files hold no data and
are served to anyone. Over HTTPS with the nameserver's certificate when it
has `[tls]`; the nameserver refuses to start with a console on a
non-loopback address without `[tls]` and accounts (as every port).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from core.errors import UnauthenticatedError
from core.security.acl import AclFile
from core.security.signing import verify
from deploy.console.collect import ConsoleData

log = logging.getLogger("tailrace.console")
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}
PARTS = {"/api/state": "state", "/api/cluster": "cluster", "/api/groups": "groups", "/api/rates": "rates"}
SECURITY_HEADERS = {
    # no script, style or connection but this origin's: nothing injected runs
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
REQUEST_TIMEOUT_S = 10  # the whole request (TLS handshake, request line, headers) within this of accept
ANSWER_TIMEOUT_S = 30  # then the answer (a wait for a refresh, the write) within this
MAX_CONNECTIONS = 64  # connections served at once; more are closed at accept (no thread each)
MAX_PER_PEER = 8  # of them from one address: one client cannot hold every slot
WATCH_S = 0.1  # how often the deadlines are checked


def overdue(deadlines: Mapping[Any, float], now: float) -> list[Any]:
    """The connections whose deadline (monotonic s) has passed."""
    return [conn for conn, at in deadlines.items() if at <= now]


class _BoundedServer(ThreadingHTTPServer):
    """One thread per connection, at most MAX_CONNECTIONS of them and
    MAX_PER_PEER per peer address, each closed at its deadline: the request
    read within REQUEST_TIMEOUT_S of accept (a per-read socket timeout
    alone lets a client trickle a byte at a time for ever), the answer within
    ANSWER_TIMEOUT_S more. A watchdog thread shuts overdue sockets down,
    which ends any read or write, the TLS handshake's included."""

    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._guard = threading.Lock()
        self.peers: dict[str, int] = {}  # peer address -> connections being served
        self.deadlines: dict[Any, float] = {}  # socket -> when it is shut down
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._watchdog, name="console-deadlines", daemon=True)
        self._watch.start()

    def _admit(self, peer: str) -> bool:
        with self._guard:
            if self.peers.get(peer, 0) >= MAX_PER_PEER:
                return False
            if not self.slots.acquire(blocking=False):
                return False
            self.peers[peer] = self.peers.get(peer, 0) + 1
            return True

    def _leave(self, request: Any, peer: str) -> None:
        with self._guard:
            self.deadlines.pop(request, None)
            n = self.peers.pop(peer, 0) - 1
            if n > 0:
                self.peers[peer] = n
            self.slots.release()

    def request_read(self, request: Any) -> None:
        """The request is in: the answer has its own deadline from now."""
        with self._guard:
            if request in self.deadlines:
                self.deadlines[request] = time.monotonic() + ANSWER_TIMEOUT_S

    def _watchdog(self) -> None:
        while not self._stopping.wait(WATCH_S):
            with self._guard:
                late = overdue(self.deadlines, time.monotonic())
                for request in late:
                    del self.deadlines[request]
            for request in late:
                with contextlib.suppress(OSError):  # the plain socket's: wakes a read, TLS or not
                    socket.socket.shutdown(request, socket.SHUT_RDWR)

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = str(client_address[0])
        if not self._admit(peer):
            self.shutdown_request(request)
            return
        with self._guard:
            self.deadlines[request] = time.monotonic() + REQUEST_TIMEOUT_S
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._leave(request, peer)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._leave(request, str(client_address[0]))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection cut (its deadline, or the client went): a debug line, not a traceback on stderr."""
        log.debug("console connection from %s ended", client_address[0], exc_info=True)

    def server_close(self) -> None:
        self._stopping.set()
        super().server_close()


def check_request(
    headers: Mapping[str, str],
    method: str,
    target: str,
    acl: AclFile | None,
    now_ms: int,
    skew_ms: int,
) -> tuple[int, str]:
    """(HTTP status, who or why) for an `/api` request: 200 and the access
    key, 401 unsigned or not proven, 403 proven but neither admin nor
    monitor. No
    accounts (`acl` None): 200, open."""
    if acl is None:
        return 200, "anonymous (no accounts)"
    current = acl.current(now_ms)
    lowered = [(k.lower(), v) for k, v in headers.items()]
    try:
        account = verify(lowered, f"{method} {target}", now_ms, current.secret_of, skew_ms)
    except UnauthenticatedError as exc:
        return 401, str(exc)
    if account is None:
        return 401, "sign in: this console needs a signed request from a monitor or admin account"
    perms = current.permissions.get(account.access_key)
    if perms is None or not perms.may_monitor():
        return 403, (
            f"account {account.access_key!r} is neither a monitor nor an admin: "
            "the console is for monitor (monitor = true) or admin accounts"
        )
    return 200, account.access_key


def static_file(name: str) -> bytes:
    return resources.files("deploy.console").joinpath("static", name).read_bytes()


class ConsoleServer:
    def __init__(
        self,
        data: ConsoleData,
        host: str,
        port: int,
        tls_files: tuple[str, str] | None,
        acl: AclFile | None,
        skew_ms: int,
        wall_ms: Callable[[], int],
    ) -> None:
        self.data = data
        self.acl = acl
        self.skew_ms = skew_ms
        self.wall_ms = wall_ms
        self.httpd = _BoundedServer((host, port), self._handler())
        self.scheme = "http"
        if tls_files is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(tls_files[0], tls_files[1])
            # the handshake runs in the request's thread, not in the accept loop
            self.httpd.socket = ctx.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="console-http", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)

    def answer(self, method: str, target: str, headers: Mapping[str, str]) -> tuple[int, str, bytes]:
        """(status, content type, body) of one request: the routing, apart
        from the socket so tests can call it."""
        path = urlsplit(target).path
        if method != "GET":
            return 405, "text/plain", b"the console is read-only: GET only\n"
        if path in STATIC:
            name, ctype = STATIC[path]
            return 200, ctype, static_file(name)
        part = PARTS.get(path)
        if part is None:
            return 404, "application/json", json.dumps({"error": f"no such endpoint {path}"}).encode()
        status, who = check_request(headers, method, target, self.acl, self.wall_ms(), self.skew_ms)
        if status != 200:
            return status, "application/json", json.dumps({"error": who}).encode()
        body: dict[str, Any] = self.data.view(part)
        group = parse_qs(urlsplit(target).query).get("group")
        if part == "groups" and group:
            groups = body.get("groups") or {}
            body["groups"] = {
                "queues": [q for q in groups.get("queues", []) if q["group"] == group[0]],
                "groups": [g for g in groups.get("groups", []) if g["group"] == group[0]],
                "unreachable": groups.get("unreachable", {}),
            }
        return 200, "application/json", json.dumps(body).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        console = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S
            server_version = "tailrace-console"
            sys_version = ""

            def _respond(self) -> None:
                console.httpd.request_read(self.request)
                try:
                    status, ctype, body = console.answer(self.command, self.path, dict(self.headers.items()))
                except Exception:  # a bug: a 500, logged, never a dropped connection
                    log.exception("console request %s %s failed", self.command, self.path[:200])
                    status, ctype, body = 500, "text/plain", b"internal error (see the nameserver's log)\n"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for k, v in SECURITY_HEADERS.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = _respond
            do_POST = _respond
            do_PUT = _respond
            do_DELETE = _respond

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("console %s: " + format, self.address_string(), *args)

        return Handler
