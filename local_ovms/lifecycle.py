"""Running work and the shutdown drain.

``Activity`` counts what is running (unary calls, and stream requests whose graph still produces
outputs) so that a SIGTERM/SIGINT can stop new work, let running work finish up to a grace period,
unload (``finalize``) the handlers, give generators a short moment to deliver their last outputs,
and then cut what is left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc

from local_ovms.errors import ServeError
from local_ovms.registry import Registry

log = logging.getLogger(__name__)

SHUTTING_DOWN = "the server is shutting down: it takes no new requests"
DELIVERY_WINDOW_S = 2.0
"""How long generators may keep delivering after ``finalize`` before their streams are cut."""


class Activity:
    """The work in progress, each piece with a callback that cuts it short."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: dict[int, Callable[[], None]] = {}
        self._next_id = 0
        self.draining = False
        self.hurry = threading.Event()

    def begin(self, cut: Callable[[], None] = lambda: None) -> int:
        """Register running work; UNAVAILABLE once the server is draining."""
        with self._cond:
            if self.draining:
                raise ServeError(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            self._next_id += 1
            self._jobs[self._next_id] = cut
            return self._next_id

    def end(self, job: int) -> None:
        """The work registered as ``job`` is over."""
        with self._cond:
            self._jobs.pop(job, None)
            self._cond.notify_all()

    def stop_accepting(self) -> None:
        """From now on ``begin`` refuses new work."""
        with self._cond:
            self.draining = True

    @property
    def running(self) -> int:
        """How many pieces of work are running."""
        with self._cond:
            return len(self._jobs)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs (True) or the timeout passes or ``hurry`` is set (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._jobs:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.hurry.is_set():
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def cut_all(self) -> None:
        """Ask every running piece of work to stop."""
        with self._cond:
            cuts = list(self._jobs.values())
        for cut in cuts:
            cut()


def drain(activity: Activity, registry: Registry, grace_period: float) -> None:
    """Stop taking work, let it finish (up to ``grace_period``), finalize handlers, cut the rest."""
    activity.stop_accepting()
    log.info("shutting down: %d request(s) running, grace period %.1f s", activity.running, grace_period)
    if not activity.wait_idle(grace_period):
        log.warning("%d request(s) still running after the grace period", activity.running)
    registry.finalize_all()
    if not activity.wait_idle(DELIVERY_WINDOW_S):
        log.warning("cutting %d request(s) still running after finalize", activity.running)
        activity.cut_all()
        activity.wait_idle(1.0)
