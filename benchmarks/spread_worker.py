"""A gunicorn worker that spreads connections over a server's workers: `benchmarks/load.py --worker-classes
robin,spread,...`'s contender to robin serve's worker (robin/gunicorn_worker.py, gunicorn's gthread with fewer
heartbeats). Needs gunicorn 27 or later (it builds on that gthread worker's event loop).

All of a server's gthread workers wait on one listening socket, and the worker that is already awake (answering)
wins the race for each new connection; a keep-alive connection then stays with the worker that accepted it for its
life. Sixteen connections opened at once by one client pile onto one to three of a replica's four workers
(BENCHMARKS.md, "Inside the workers", and the sixth round's section), queueing for their threads and interpreter
lock while other workers idle.

This worker publishes its busy connections (being answered, or waiting for one of its threads) in a table the
server's workers share, and listens for new connections only while none is less busy than itself and its threads
are not all busy. Some worker is always least busy, so a new connection always has a taker unless every worker's
threads are busy (the cap): it then waits in the kernel's listen backlog until a request anywhere is answered,
where gthread would have queued it for a thread of whichever worker won it. Idle keep-alive connections (CSI nodes,
the provisioner, between their requests) do not count: however many a worker holds, it takes new ones. gunicorn's
own cap (`worker_connections`, idle connections included) still applies.

It spreads the benchmark's connections evenly, but robin's reads were no faster and their tail no shorter for it,
on the loaded 2-core machine and on the quiet one alike (BENCHMARKS.md): robin serve does not use it.
"""
from __future__ import annotations

import multiprocessing
import os

from gunicorn.workers import gthread

SLOTS = 256  # workers per server that take part; more than that accept as gthread's do, capped by their threads
# How soon a worker that declined for another's sake looks again: that other may have taken connections since
# and declined in turn, and a busy worker's own events (which make it look) may be a long Ceph call away.
RECHECK_S = 0.05

# Made at import, in gunicorn's master (which loads the worker class before forking): every worker it forks, and
# every one it forks again to replace a worker, shares them. A slot's pid is 0 when free.
_PIDS = multiprocessing.RawArray("i", SLOTS)
_BUSY = multiprocessing.RawArray("i", SLOTS)
_IN_USE = multiprocessing.RawValue("i", 0)  # slots ever claimed: the others need no look (a scan is per event loop)
_CLAIM = multiprocessing.Lock()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_slot(pid: int) -> int | None:
    """A slot for `pid`: a free one, or one a worker killed without releasing it left behind."""
    with _CLAIM:
        for slot in range(SLOTS):
            if _PIDS[slot] == 0 or not _alive(_PIDS[slot]):
                _PIDS[slot], _BUSY[slot] = pid, 0
                _IN_USE.value = max(_IN_USE.value, slot + 1)
                return slot
    return None


def least_busy_elsewhere(own: int) -> tuple[int, int] | None:
    """(busy connections, slot) of the least busy other worker, or None when there is no other."""
    found = None
    for slot in range(_IN_USE.value):
        if slot != own and _PIDS[slot] and (found is None or _BUSY[slot] < found[0]):
            found = (_BUSY[slot], slot)
    return found


class ThreadWorker(gthread.ThreadWorker):
    slot: int | None = None
    declined_for_another = False

    def init_process(self):
        self.slot = claim_slot(os.getpid())
        super().init_process()  # runs the worker's loop until it stops

    def run(self):
        try:
            super().run()
        finally:
            if self.slot is not None:
                _BUSY[self.slot], _PIDS[self.slot] = 0, 0

    def busy_connections(self) -> int:
        """Connections being answered or queued for a thread: neither kept alive between requests nor waiting
        (deferred) for a new connection's first bytes."""
        return self.nr_conns - len(self.keepalived_conns) - len(self.pending_conns)

    def others_less_busy(self, busy: int) -> bool:
        if self.slot is None or busy == 0:  # none is less busy than idle
            return False
        other = least_busy_elsewhere(self.slot)
        if other is None or other[0] >= busy:
            return False
        if not _alive(_PIDS[other[1]]):  # killed without releasing its slot: it takes nothing
            _BUSY[other[1]], _PIDS[other[1]] = 0, 0
            return self.others_less_busy(busy)
        return True

    def set_accept_enabled(self, enabled: bool) -> None:
        # gunicorn's verdict (its worker_connections) and ours.
        busy = self.busy_connections()
        self.declined_for_another = enabled and busy < self.cfg.threads and self.others_less_busy(busy)
        super().set_accept_enabled(enabled and busy < self.cfg.threads and not self.declined_for_another)

    def wait_for_and_dispatch_events(self, timeout):
        # Before every wait: gunicorn's loop asks again only when its own verdict changes; the busy connections
        # change with every accepted connection, answered request and kept-alive connection's next request, each of
        # which ends a wait.
        if self.alive:  # a stopping worker has stopped accepting for good
            if self.slot is not None:
                _BUSY[self.slot] = self.busy_connections()
            self.set_accept_enabled(self.nr_conns < self.worker_connections)
            if self.declined_for_another:
                timeout = min(timeout, RECHECK_S)
        super().wait_for_and_dispatch_events(timeout)
