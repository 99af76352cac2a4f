"""The component tier's brokers: `deploy.broker_node.BrokerNode`s in this
process, each with its own gRPC server on 127.0.0.1 port 0 and its own data
dir, master and slaves side by side. Every node started is stopped at the end,
even when the test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.broker_config import load_broker_config
from deploy.broker_node import BrokerNode
from deploy.harness import poll_until

SECRET = "component-secret"


class Nodes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[BrokerNode] = []

    def start(self, name: str, overrides: dict[str, Any] | None = None) -> BrokerNode:
        """A broker with `overrides` ({"section.key": value}) over small, fast defaults."""
        settings: dict[str, Any] = {
            "broker.listen": "127.0.0.1:0",
            "broker.data_dir": str(self.root / name),
            "broker.broker_name": "g",
            "replication.secret": SECRET,
            "replication.heartbeat_ms": 50,
            "server.metrics_listen": "",
            "server.max_workers": 16,
            "server.grace_ms": 0,
            "store.segment_bytes": 1 << 20,
            "store.max_message_bytes": 256 * 1024,
            "store.warm_segments": False,
        }
        settings.update(overrides or {})
        node = BrokerNode(load_broker_config(None, settings))
        self.started.append(node)  # before start(): a node that fails half way is stopped too
        return node.start()

    def master(self, overrides: dict[str, Any] | None = None) -> BrokerNode:
        return self.start("master", overrides)

    def slave(
        self, master: BrokerNode, broker_id: int = 1, overrides: dict[str, Any] | None = None
    ) -> BrokerNode:
        role = {"broker.role": "slave", "broker.broker_id": broker_id, "broker.master": master.address}
        node = self.start(f"slave{broker_id}", {**role, **(overrides or {})})
        poll_until(
            lambda: node.core.status()["details"]["replication"]["connected"], 10, "the slave attached"
        )
        return node

    def stop_all(self) -> None:
        """Stop every node, then report the first that failed to stop."""
        errors: list[Exception] = []
        for node in reversed(self.started):
            try:
                node.stop()
            except Exception as exc:
                errors.append(exc)
        self.started.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.stop_all()
