"""The SQLite file itself: the lock that keeps a second server off it, and a WAL kept bounded."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3

import aiosqlite

from receiver.aio import wait_for
from receiver.errors import StoreError

log = logging.getLogger("receiver.store")

CHECKPOINT_EVERY_S = 0.5
WAL_TRUNCATE_BYTES = 16 * 1024 * 1024  # past this the checkpointer truncates the WAL (waiting for readers)


class FileLock:
    """An exclusive, non-blocking lock on `<path>.lock`; the OS drops it when the process dies."""

    def __init__(self, path: str) -> None:
        self.path = path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"another receiver is already serving {self.path[:-5]!r} "
                             "(a SQLite file belongs to one process; use PostgreSQL for replicas)") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None



async def keep_wal_bounded(path: str, checkpointer: aiosqlite.Connection, written: asyncio.Event) -> None:
    """Keep the WAL bounded, off the event loop: PASSIVE after writes (never blocks a writer),
    TRUNCATE once it passes WAL_TRUNCATE_BYTES or the store has been idle for a moment."""
    while True:
        try:
            idle = not await wait_for(written, CHECKPOINT_EVERY_S * 4)
            if idle:
                await written.wait()
                continue
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            written.clear()
            mode = "TRUNCATE" if wal_size(path) > WAL_TRUNCATE_BYTES else "PASSIVE"
            await checkpointer.execute_fetchall(f"PRAGMA wal_checkpoint({mode})")
            if not await wait_for(written, CHECKPOINT_EVERY_S * 2):
                await checkpointer.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")  # idle now
        except asyncio.CancelledError:
            raise
        except (sqlite3.Error, ValueError) as exc:  # busy or closing: the next round tries again
            log.warning("WAL checkpoint failed: %s", exc)


def wal_size(path: str) -> int:
    try:
        return os.stat(path + "-wal").st_size
    except OSError:
        return 0

