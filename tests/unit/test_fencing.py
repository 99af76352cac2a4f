"""Which refusal a write gets (master/fencing.py): a demoted mastership says
NOT_MASTER, one that leads without a valid lease MASTER_LEASE_EXPIRED; a fake
clock, no broker."""

from __future__ import annotations

import pytest

from core.errors import LeaseExpiredError, NotMasterError
from core.roles import SendStatus
from master.fencing import enter, writing
from master.lease import Lease
from master.write_gate import WriteGate

pytestmark = pytest.mark.unit


def test_refusals() -> None:
    now = [100.0]
    gate, lease = WriteGate(), Lease(lambda: now[0])
    leading = lambda: False  # noqa: E731
    first = enter(gate, lease, leading)
    assert first is not None and first.status is SendStatus.MASTER_LEASE_EXPIRED
    assert "not granted yet" in first.why  # promoted, no renewal heard yet
    lease.grant(100.0, 4000)
    assert enter(gate, lease, leading) is None  # entered: may write
    gate.leave()
    now[0] = 103.0  # 3/4 of the lease, no renewal since
    lapsed = enter(gate, lease, leading)
    assert lapsed is not None and lapsed.status is SendStatus.MASTER_LEASE_EXPIRED and "lapsed" in lapsed.why
    with (
        pytest.raises(LeaseExpiredError, match="until a controller renews it"),
        writing(gate, lease, leading),
    ):
        pass
    lease.grant(103.0, 4000)  # renewed: the same mastership writes again
    with writing(gate, lease, leading):
        pass
    # retiring: the lease is revoked before the gate closes; a write in between is a demoted one's
    lease.revoke()
    between = enter(gate, lease, lambda: True)
    assert between is not None and between.status is SendStatus.NOT_MASTER
    assert gate.close(1.0)
    closed = enter(gate, None, leading)
    assert closed is not None and closed.status is SendStatus.NOT_MASTER
    with pytest.raises(NotMasterError), writing(gate, lease, leading):
        pass
    assert not isinstance(closed.error(), LeaseExpiredError)
