"""A broker core that leads broker group "g" on a store in a temp dir, for
unit tests that drive its background work (scheduler, timer, pop revive) by
hand: none of its threads is started."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.broker.core import BrokerCore
from core.broker_config import load_broker_config
from core.epochs import EpochFile
from core.offsets import ConsumerOffsets
from core.store import MessageStore, StoreConfig
from deploy.broker_node import Roles
from master.leader import LeaderRole


def open_core(
    directory: Path, config: StoreConfig, clock_ms: Callable[[], int] | None = None, **overrides: Any
) -> BrokerCore:
    """`clock_ms`: the store's clock (None: the wall clock); `overrides`:
    broker config keys, "__" for "." (`broker__retry_delays="1s"`)."""
    store = MessageStore(directory / "store", replace(config, warm_segments=False), clock_ms=clock_ms)
    settings = {"broker.broker_name": "g", "broker.data_dir": str(directory)}
    cfg = load_broker_config(None, {**settings, **{k.replace("__", "."): v for k, v in overrides.items()}})
    offsets, epochs = ConsumerOffsets(directory), EpochFile(directory, store.commitlog.max_offset)
    return BrokerCore(cfg, store, offsets, epochs, Roles())


def close_core(core: BrokerCore) -> None:
    core.close()
    core.store.close()


@dataclass
class LeaderBroker:
    """A test's handle on the core; subclasses add their own helpers."""

    core: BrokerCore

    @property
    def leader(self) -> LeaderRole:
        role = self.core.role
        assert isinstance(role, LeaderRole)
        return role
