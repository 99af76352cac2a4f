"""The console's HTTP server in this process: connections beyond its bound
(overall and per peer) are closed at accept, a freed slot serves again, and
a request not read by its deadline is cut, however slowly it trickles."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from typing import Any

import pytest

from deploy.console import server as console_server
from deploy.waits import poll_until

pytestmark = pytest.mark.component


class NoData:
    def view(self, part: str) -> dict[str, Any]:
        return {"part": part}


def test_connections_past_the_bound_are_closed_and_slots_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_server, "MAX_CONNECTIONS", 2)
    srv = console_server.ConsoleServer(NoData(), "127.0.0.1", 0, None, None, 300_000, lambda: 0)  # type: ignore[arg-type]
    srv.start()
    held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(2)]
    try:
        poll_until(lambda: srv.httpd.slots._value == 0, 10, "both slots taken")  # type: ignore[attr-defined]
        extra = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        assert extra.recv(1) == b""  # closed at once, no thread spent on it
        extra.close()
        for s in held:
            s.close()
        poll_until(lambda: srv.httpd.slots._value == 2, 15, "the slots freed")  # type: ignore[attr-defined]
        with urllib.request.urlopen(f"{srv.url}api/state", timeout=5) as r:
            assert r.status == 200
    finally:
        for s in held:
            s.close()
        srv.stop()


def _works(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}api/state", timeout=2) as r:
            return r.status == 200
    except OSError:  # refused, reset or closed at accept
        return False


def _closed(s: socket.socket, within_s: float) -> bool:
    """The server closed `s` (EOF or reset) within `within_s`."""
    s.settimeout(within_s)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_trickling_client_is_cut_at_the_request_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review B1: a byte of the request line every 0.6 s, inside the per-read
    timeout, held a slot for ever; two such clients locked everyone out
    before any signature was checked. The request must be in within
    REQUEST_TIMEOUT_S of accept, however it trickles."""
    monkeypatch.setattr(console_server, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(console_server, "REQUEST_TIMEOUT_S", 1.0)
    srv = console_server.ConsoleServer(NoData(), "127.0.0.1", 0, None, None, 300_000, lambda: 0)  # type: ignore[arg-type]
    srv.start()
    stop = threading.Event()
    attackers = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(2)]

    def trickle(s: socket.socket) -> None:
        for b in b"GET /api/state HTTP/1.0":  # never the end of the line
            if stop.wait(0.6):
                return
            try:
                s.sendall(bytes([b]))
            except OSError:
                return  # cut: what the fix does

    threads = [threading.Thread(target=trickle, args=(s,), daemon=True) for s in attackers]
    for t in threads:
        t.start()
    try:
        started = time.monotonic()
        assert all(_closed(s, 3.0) for s in attackers), "a trickling client kept its slot"
        assert time.monotonic() - started < 2.5
        poll_until(lambda: _works(srv.url), 2, "the slots serving again")
    finally:
        stop.set()
        for s in attackers:
            s.close()
        srv.stop()


def test_one_peer_cannot_take_every_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle connections from one address (127.0.0.2) stop at MAX_PER_PEER;
    another address (127.0.0.1) is still served while they are held."""
    monkeypatch.setattr(console_server, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(console_server, "MAX_PER_PEER", 2)
    srv = console_server.ConsoleServer(NoData(), "127.0.0.1", 0, None, None, 300_000, lambda: 0)  # type: ignore[arg-type]
    srv.start()
    held = [
        socket.create_connection(("127.0.0.1", srv.port), timeout=5, source_address=("127.0.0.2", 0))
        for _ in range(4)
    ]
    try:
        poll_until(lambda: srv.httpd.peers.get("127.0.0.2") == 2, 10, "two from one peer held")  # type: ignore[attr-defined]
        assert sum(_closed(s, 1.0) for s in held) == 2  # the two past the peer's cap, at accept
        assert _works(srv.url)  # from elsewhere: served
    finally:
        for s in held:
            s.close()
        srv.stop()
