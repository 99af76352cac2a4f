"""The gate every write of one mastership passes, so that retiring it is a
clean cut: once `close()` returns, every write that entered has finished its
append and no other ever will.

Fencing by a flag alone leaves a window: a write checks the flag, then the
broker is demoted and starts following, then the write appends into what is
now a follower's log. The gate closes that window; it guards the append only
(never the wait for slaves' acks), so closing it waits microseconds, or a
sync flush at worst.
"""

from __future__ import annotations

import threading


class WriteGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._closed = False
        self._only: threading.Thread | None = None

    def enter(self) -> bool:
        """Enter for one write; False once closed (store nothing)."""
        with self._cond:
            if self._closed or (self._only is not None and threading.current_thread() is not self._only):
                return False
            self._inside += 1
            return True

    def only(self, thread: threading.Thread) -> None:
        """Refuse every new write but `thread`'s (a retiring master's timer
        finishing its pass: clients are fenced while it does)."""
        with self._cond:
            self._only = thread

    def leave(self) -> None:
        with self._cond:
            self._inside -= 1
            if self._inside == 0:
                self._cond.notify_all()

    def close(self, timeout_s: float) -> bool:
        """Refuse new writes, wait for those inside; False if some were still
        inside at the timeout."""
        with self._cond:
            self._closed = True
            return self._cond.wait_for(lambda: self._inside == 0, timeout_s)

    @property
    def closed(self) -> bool:
        return self._closed
