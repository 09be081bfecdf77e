"""A background worker's store outage in the log: one line when it starts failing, one when it works again.

Workers retry every pass (every second or less), so logging each failed pass floods the log while a
database restarts or a network drops. Each worker keeps an `Outage`: the first failure is logged (with
a traceback only when it is not a plain store error, i.e. possibly a bug), the repeats at DEBUG, and the
first pass that works again says the store is back and how long it was away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from receiver.errors import StoreError


class Outage:
    """The state of one worker's use of the store; `failed` after a pass that failed, `ok` after one that worked."""

    __slots__ = ("clock", "failures", "log", "since", "what")

    def __init__(self, log: logging.Logger, what: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.what = what  # names the worker in its lines: "delivery", "reconcile of pixazo", …
        self.clock = clock
        self.since: float | None = None  # when the current outage began (clock time); None while all is well
        self.failures = 0  # failed passes in the current outage

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """A pass failed: logged if it is the first of an outage, else only at DEBUG."""
        self.failures += 1
        if self.since is not None:
            self.log.debug("%s: still failing: %s", self.what, exc)
            return
        self.since = self.clock()
        if isinstance(exc, StoreError):
            self.log.warning("%s: store unavailable (%s); retrying, next line when it is back", self.what, exc)
        else:
            self.log.error("%s failed; retrying, next line when it works again", self.what, exc_info=exc)

    def ok(self) -> None:
        """A pass worked: says the store is back, once, if an outage was going on."""
        if self.since is None:
            return
        away_s, failures = self.clock() - self.since, self.failures
        self.since, self.failures = None, 0
        self.log.info(
            "%s: store back after %.1f s (%d failed pass%s)", self.what, away_s, failures, "" if failures == 1 else "es"
        )
