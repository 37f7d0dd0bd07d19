"""The build lease: replicas that share one index folder take turns to build it.

The lock is flufl.lock's: a hard link from a claim file to `build.lock`, which NFS makes atomic where
flock is not, with a lifetime written as the lock file's mtime. The holder renews it from a heartbeat
thread; a holder killed with SIGKILL stops renewing, and the next replica breaks the lock once the
lifetime (plus flufl's 10 s of clock slop) has passed. Replicas' clocks must agree (NTP).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

from flufl.lock import Lock, NotLockedError, TimeOutError

log = logging.getLogger(__name__)

LOCK_NAME = "build.lock"
# How long one attempt to take the lock waits before the caller may give up (a shutdown).
ATTEMPT_S = 1.0


class LeaseLost(Exception):
    """Another replica broke this replica's lease (it did not renew in time): it must not publish."""


class BuildLease:
    """The lock of one index folder, held with `held()` and renewed every third of `lease_s`."""

    def __init__(self, folder: Path, lease_s: float) -> None:
        self.folder = folder
        self.lease_s = lease_s

    @contextlib.contextmanager
    def held(self, check: Callable[[], None]) -> Iterator[Lock]:
        """Wait for the lock (calling `check`, which may raise to give up, between attempts), hold
        it and renew it until the block ends."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = Lock(str(self.folder / LOCK_NAME), lifetime=timedelta(seconds=self.lease_s))
        waiting = False
        while True:
            check()
            try:
                lock.lock(timeout=timedelta(seconds=ATTEMPT_S))
                break
            except TimeOutError:
                if not waiting:
                    log.info("another replica is building the index (%s); waiting", _holder(lock))
                    waiting = True
        done = threading.Event()
        heartbeat = threading.Thread(target=self._renew, args=(lock, done), name="index-lease", daemon=True)
        heartbeat.start()
        try:
            yield lock
        finally:
            done.set()
            heartbeat.join()
            lock.unlock(unconditionally=True)

    def _renew(self, lock: Lock, done: threading.Event) -> None:
        while not done.wait(self.lease_s / 3):
            try:
                lock.refresh()
            except NotLockedError:
                log.error("the index build lease was broken by another replica")
                return
            except OSError as exc:
                log.warning("cannot renew the index build lease: %s", exc)


def confirm(lock: Lock) -> None:
    """Raise LeaseLost unless this replica still holds `lock` (checked before publishing a build)."""
    if not lock.is_locked:
        raise LeaseLost("the index build lease expired and another replica took it over")


def _holder(lock: Lock) -> str:
    with contextlib.suppress(NotLockedError, OSError, ValueError):
        hostname, pid, _ = lock.details
        return f"held by pid {pid} on {hostname}"
    return "holder unknown"
