"""PullSources: which broker of its group each queue is pulled from.

The redirect-following part of `PullConsumer` (consumer/pull_consumer.py). A
queue is pulled from its group's master until an answer suggests another
broker (`suggested_broker_id`: a slave that holds the offset in page cache,
or the master again); the suggestion is followed while the route lists that
broker alive. A slave that fails a pull sends the queue back to the master
at once and is not followed again for `REPLICA_AVOID_S`; a slave that
cannot serve the offset yet (`RETRY_ELSEWHERE`) does too, unless it
suggested another broker. All calls come from the polling thread. Plain
logic: the time is passed in (`now`, monotonic seconds), so the choice is
unit-tested as a table (tests/unit/test_pull_source.py), like the broker's
side of it in core/redirect.py.
"""

from __future__ import annotations

from core.pb.tailrace.v1 import broker_pb2 as pb
from core.route import MASTER_ID, MessageQueue, TopicRoute

REPLICA_TIMEOUT_S = 2.0  # deadline of a pull from a slave (slaves answer at once)
REPLICA_AVOID_S = 15.0  # a slave that failed a pull is not followed for this long


class PullSources:
    def __init__(self) -> None:
        self.pull_from: dict[MessageQueue, int] = {}  # broker id each queue is pulled from
        self.inflight_from: dict[MessageQueue, int] = {}  # broker id of each queue's last pull
        self.avoid: dict[int, float] = {}  # replica broker id -> ignore suggestions of it until
        # per queue: (answered by, suggested broker, reason) of the last advice
        self.last_advice: dict[MessageQueue, tuple[int, int, str]] = {}

    def address(self, mq: MessageQueue, route: TopicRoute) -> tuple[int, str | None]:
        """(broker id, address) this queue is pulled from: the broker the last
        answer suggested, while the route still lists it alive; else the master."""
        bid = self.pull_from.get(mq, MASTER_ID)
        if bid != MASTER_ID:
            g = route.group(mq.broker_name)
            for b in g.brokers if g is not None else ():
                if b.broker_id == bid and b.alive:
                    return bid, b.address
            self.pull_from[mq] = MASTER_ID
        return MASTER_ID, route.master_address(mq.broker_name)

    def issued(self, mq: MessageQueue, bid: int) -> None:
        """A pull of `mq` went to broker `bid`."""
        self.inflight_from[mq] = bid

    def issued_to(self, mq: MessageQueue) -> int:
        """The broker id the last pull of `mq` went to."""
        return self.inflight_from.get(mq, MASTER_ID)

    def replica_failed(self, mq: MessageQueue, bid: int, now: float) -> None:
        """A pull from replica `bid` failed: back to the master at once, and
        that replica's suggestions are ignored for a while."""
        self.pull_from[mq] = MASTER_ID
        self.avoid[bid] = now + REPLICA_AVOID_S

    def advised(self, mq: MessageQueue, resp: pb.PullResponse, route: TopicRoute, now: float) -> bool:
        """Take an answer's advice; True if `mq` is pulled from another broker next."""
        switched = self._follow(mq, resp.suggested_broker_id, route, now)
        if resp.suggested_broker_id >= 0:
            self.last_advice[mq] = (resp.served_by, resp.suggested_broker_id, resp.suggestion_reason)
        return switched

    def retry_elsewhere(self, mq: MessageQueue, switched: bool) -> None:
        """The replica cannot serve the offset yet: the master, unless the
        answer already named another broker."""
        if not switched:
            self.pull_from[mq] = MASTER_ID

    def _follow(self, mq: MessageQueue, suggested: int, route: TopicRoute, now: float) -> bool:
        """Pull `mq` from `suggested` next (if the route knows it); True if it changed."""
        if suggested < 0 or suggested == self.pull_from.get(mq, MASTER_ID):
            return False
        if self.avoid.get(suggested, float("-inf")) > now:
            return False  # it failed us a moment ago: the master serves meanwhile
        g = route.group(mq.broker_name)
        if suggested != MASTER_ID and (g is None or not any(b.broker_id == suggested for b in g.brokers)):
            return False  # a broker this route does not list yet: stay
        self.pull_from[mq] = suggested
        return True
