"""The console's HTTP server in this process: connections beyond its bound
are closed at accept, and a freed slot serves again."""

from __future__ import annotations

import socket
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
