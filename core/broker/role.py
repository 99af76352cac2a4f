"""What the broker core expects of a role object, and how it gets one.

A broker holds exactly one role at a time (`BrokerCore.role`). The core asks
it one question, `is_leader`; everything else it asks is the same for both
roles (serve a pull, say how far the log is confirmed, report status). The
leader's own operations (the write path, replication source, lease, queue
locks) are reached only through `BrokerCore.leader()`, which refuses on a
follower. Promotion and demotion swap the object (`RoleFactory` makes them;
`deploy/` wires `master.LeaderRole` and `slave.FollowerRole` in).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from core.pop.ops import PopOps
from core.pull import PullArgs, PullReply
from core.record import Message
from core.replicas import ReplicaSet
from core.roles import Directive, Role, SendStatus
from core.transactions import TransactionOps

if TYPE_CHECKING:
    from core.broker.core import BrokerCore


@dataclass(slots=True)
class SendOutcome:
    status: SendStatus
    topic: str
    queue_id: int
    results: list[tuple[int, int]]  # (physical offset, queue offset) per stored message
    detail: str = ""
    master_address: str = ""
    epoch: int = 0
    transaction_ids: list[str] = field(default_factory=list)  # a transactional send's, one per message


@dataclass(slots=True)
class RoleStatus:
    """What a role adds to `Status.details`: its "replication" entry, and
    (a leader's) what the core files under "redirect" and "failover"."""

    replication: dict[str, Any]
    queues_sent_away: int = 0
    lease_left_ms: int = 0
    required: list[int] = field(default_factory=list)


class BrokerRole(Protocol):
    """What both roles do."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def name(self) -> Role: ...

    @property
    def master_address(self) -> str:
        """Where writes go ("" while a follower has not heard of a master)."""
        ...

    @property
    def master_member_address(self) -> str:
        """Where a follower replicates from ("": `master_address`; a leader: "")."""
        ...

    @property
    def master_node(self) -> int | None:
        """The node a follower's master must be (its certificate names it);
        None: any broker of the group (not known yet; a leader)."""
        ...

    def start(self) -> None: ...

    def retire(self) -> None:
        """Take this role's power away, under the core's role lock: once it
        returns, nothing this role does changes the log any more (a leader is
        fenced and waits for the appends under way; a follower's replication
        stream has stopped). Called before the next role starts."""
        ...

    def close(self) -> None:
        """Release what is left (threads that no longer change anything). May
        block; called outside the role lock, after `retire`."""
        ...

    def pull(self, args: PullArgs, alive: Callable[[], bool]) -> PullReply: ...

    def confirmed(self) -> int:
        """The log offset below which records are safe from a failover."""
        ...

    def visible_end(self) -> int | None:
        """What a pull may read up to (None: the whole log)."""
        ...

    def on_append(self) -> None:
        """The log grew (called after every append, by the store's listener)."""
        ...

    def replication_gauges(self) -> tuple[dict[int, int], int]:
        """(lag bytes per connected slave, slaves in sync) for the metrics."""
        ...

    def status_details(self) -> RoleStatus:
        """This role's part of `Status.details`."""
        ...


class LeaderOps(BrokerRole, Protocol):
    """What only the leader does; reached through `BrokerCore.leader()`."""

    epoch: int
    replicas: ReplicaSet
    retired: bool

    @property
    def popper(self) -> PopOps:
        """Pop consumption (issue 18): master/popper.py."""
        ...

    @property
    def transactions(self) -> TransactionOps:
        """Transactional messages (issue 18): master/transactions.py."""
        ...

    def send(
        self, topic: str, queue_id: int, messages: Sequence[Message], internal: bool = False
    ) -> SendOutcome: ...

    def send_back(
        self, group: str, topic: str, message: Message, max_reconsume: int
    ) -> tuple[str, int, int]: ...

    def create_topic(self, topic: str, queues: int) -> tuple[bool, int]: ...

    def commit_offset(
        self, group: str, topic: str, queue_id: int, offset: int, internal: bool = False
    ) -> None: ...

    def write_system(self, plan: Callable[[], list[tuple[str, dict[str, Any]]]]) -> None: ...

    def lock_queues(
        self, group: str, topic: str, client_id: str, queue_ids: list[int], lease_ms: int
    ) -> list[int]: ...

    def unlock_queues(self, group: str, topic: str, client_id: str, queue_ids: list[int]) -> None: ...

    def propose(self) -> tuple[int, frozenset[int]]:
        """The in-sync set to report to the controller, and its generation."""
        ...

    def renewed(self, sent_at: float, directive: Directive, gen: int) -> None:
        """The controller renewed the lease of a heartbeat sent at `sent_at`
        and confirmed the in-sync proposal of generation `gen`."""
        ...

    def fenced(self) -> bool:
        """Whether writes are refused (lease lapsed, or retired)."""
        ...

    def ensure_topic(self, topic: str, queues: int) -> None: ...


class RoleFactory(Protocol):
    def leader(self, core: BrokerCore, epoch: int) -> LeaderOps:
        """The leader role for `epoch` (0 without a controller)."""
        ...

    def follower(
        self, core: BrokerCore, master_address: str, member_address: str = "", master_node: int | None = None
    ) -> BrokerRole:
        """A follower of the master at `master_address` ("": none known yet),
        replicating from `member_address` ("": the same)."""
        ...
