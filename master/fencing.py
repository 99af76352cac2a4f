"""Whether one mastership may write now, and if not, which refusal it gives.

Every write enters the mastership's `WriteGate` (master/write_gate.py) and
checks the lease inside it (master/lease.py). The two refusals differ in
what the broker knows and what the caller should expect:

- the gate is closed: the broker was demoted (or is shutting down): it is
  no longer the master, `NOT_MASTER` (the route, or the answer's
  `master_address`, leads to the one that is);
- the gate is open but the lease is not valid: the broker still leads its
  epoch as far as it knows, but no controller renewed its lease in time
  (every controller unreachable, such as etcd's quorum lost; or this broker
  cut off from them), or none has granted one yet since its promotion:
  `MASTER_LEASE_EXPIRED`. Pulls go on; writes resume, on this same master,
  once a controller renews the lease, unless another master was elected
  meanwhile (then this one is demoted and says `NOT_MASTER`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.errors import LeaseExpiredError, NotMasterError, TailraceError
from core.roles import SendStatus
from master.lease import Lease
from master.write_gate import WriteGate


@dataclass(frozen=True, slots=True)
class Refusal:
    status: SendStatus  # NOT_MASTER or MASTER_LEASE_EXPIRED: nothing stored
    why: str

    def error(self) -> TailraceError:
        """The same refusal for a write that is not a send (it raises)."""
        if self.status is SendStatus.MASTER_LEASE_EXPIRED:
            return LeaseExpiredError(f"{self.why}: it takes no writes until a controller renews it")
        return NotMasterError(f"{self.why}: it takes no writes")


def enter(gate: WriteGate, lease: Lease | None, retired: Callable[[], bool]) -> Refusal | None:
    """Enter the gate for one write: None when the mastership may write now
    (the caller leaves the gate after its append), else why not (not entered).
    `retired` is asked after the lease: retiring revokes the lease before it
    closes the gate, and a write in between is refused as a demoted one."""
    if not gate.enter():
        return Refusal(SendStatus.NOT_MASTER, "no longer the master")
    if lease is not None and not lease.valid():
        gate.leave()
        if retired():
            return Refusal(SendStatus.NOT_MASTER, "no longer the master")
        why = "lapsed (no controller renewed it)" if lease.granted else "not granted yet (no controller did)"
        return Refusal(SendStatus.MASTER_LEASE_EXPIRED, f"this master's lease {why}")
    return None


@contextmanager
def writing(gate: WriteGate, lease: Lease | None, retired: Callable[[], bool]) -> Iterator[None]:
    """Inside the gate for one write that raises its refusal (not a send)."""
    refusal = enter(gate, lease, retired)
    if refusal is not None:
        raise refusal.error()
    try:
        yield
    finally:
        gate.leave()
