"""Process-level faults for the tests: a projection child that dies while it holds a request."""

from __future__ import annotations

import os
import signal


def kill_under_request(worker, times: int, op: str = "project") -> list[int]:
    """Make ``worker``'s child (a ProjectionWorker) die while it holds an ``op`` request, ``times`` times.

    The child is stopped before the request goes out, so it cannot answer first, and killed right after.
    Returns the list of killed pids (filled as it happens)."""
    killed: list[int] = []
    send = worker._send

    def dying_send(name, kwargs):
        if name != op or len(killed) >= times:
            return send(name, kwargs)
        pid = worker.pid
        os.kill(pid, signal.SIGSTOP)
        rid = send(name, kwargs)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        return rid

    worker._send = dying_send
    return killed
