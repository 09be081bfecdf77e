"""In-process wake-ups after a commit: long-polls, the event stream and the outbox wait on keys."""

from __future__ import annotations

import asyncio

from receiver.store.base import Changes
from receiver.util.aio import wait_for

__all__ = ["EVENTS", "OUTBOX", "Notifier", "job_key", "wait_for"]

OUTBOX = "outbox"
EVENTS = "events"


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


class Notifier:
    """Take the event for a key *before* checking the store, then wait on it: no wake-up is missed."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, key: str) -> asyncio.Event:
        ev = self._events.get(key)
        if ev is None:
            ev = self._events[key] = asyncio.Event()
        return ev

    def publish(self, key: str) -> None:
        ev = self._events.pop(key, None)
        if ev is not None:
            ev.set()

    def wake_all(self) -> None:
        """Wake every waiter (shutdown: held long-polls and streams answer at once with what they have)."""
        for key in list(self._events):
            self.publish(key)

    def on_changes(self, changes: Changes) -> None:
        """Store listener: called after each commit that finished jobs or queued messages."""
        if not self._events:  # nobody waits (a busy ingest, no long-polls): nothing to wake
            return
        if changes.everything:  # unknown what changed (a missed notification, many ids): wake every waiter
            self.wake_all()
            return
        for job_id in changes.terminal_job_ids:
            self.publish(job_key(job_id))
        if changes.terminal_job_ids:
            self.publish(EVENTS)
        if changes.new_messages:
            self.publish(OUTBOX)
