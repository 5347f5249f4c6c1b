"""The node's bandwidth budget during one run: one ``_core.Budget`` shared by every transfer
running at once, its rate following the configured time-of-day schedule.

A transfer asks ``current()`` when it starts: ``None`` means no budget applies right now (the
transfer keeps its fast paths). With schedule rules a daemon thread re-reads the schedule
every ``FOLLOW_INTERVAL`` seconds, so a transfer that runs across 18:00 changes speed there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from pverep._core import Budget
from pverep.bandwidth import BandwidthPlan

#: How often a running budget re-reads its schedule.
FOLLOW_INTERVAL = 15.0
#: The rate a running budget gets when the schedule says "unlimited" (no real link is faster).
UNLIMITED = 1e12


class NodeBudget:
    def __init__(
        self, plan: BandwidthPlan, clock: Callable[[], datetime] = lambda: datetime.now()
    ) -> None:
        self.plan = plan
        self.clock = clock
        self._budget: Budget | None = None
        self._lock = threading.Lock()
        self._follower: threading.Thread | None = None

    def current(self) -> Budget | None:
        """The shared budget at its rate for now, or None when the schedule says unlimited."""
        if not self.plan.limited:
            return None
        rate = self.plan.rate_at(self.clock())
        with self._lock:
            if self._budget is None:
                if rate is None:
                    return None
                self._budget = Budget(rate)
                self._start_following()
            elif self._budget.rate != (rate or UNLIMITED):
                self._budget.set_rate(rate or UNLIMITED)
            return self._budget if rate is not None else None

    def _start_following(self) -> None:
        if not self.plan.rules or self._follower is not None:
            return

        def follow() -> None:
            stop = threading.Event()
            while not stop.wait(FOLLOW_INTERVAL):
                self.current()

        self._follower = threading.Thread(target=follow, name="pverep-budget", daemon=True)
        self._follower.start()
