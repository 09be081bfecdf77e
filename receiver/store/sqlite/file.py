"""The SQLite file itself: its write connection and transactions, the lock that keeps a second server off
it, and a WAL kept bounded."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite

from receiver.errors import StoreError
from receiver.util.aio import wait_for

log = logging.getLogger("receiver.store")

T = TypeVar("T")
BUSY_WAIT_S = 5.0  # how long a write waits for another process's lock before it fails as unavailable
STATEMENT_CACHE = 256  # prepared statements a connection keeps (sqlite3's default is 128)

CHECKPOINT_EVERY_S = 0.5
WAL_LOOK_S = 0.02  # how often the WAL's size is looked at between checkpoints
CHECKPOINT_BUSY_MS = 250  # how long a checkpoint waits for readers (and holds the writes meanwhile)
# The WAL file never grows past this (the README promises it). It is a ceiling, not a trigger: the WAL starts
# over once it passes a quarter of it, and is truncated, writes held, past half of it; the margin above
# covers what is written between two checks (0.5 s) under any load the receiver takes.
WAL_CEILING_BYTES = 64 * 1024 * 1024


def wal_restart_bytes() -> int:
    """Past this the WAL is made to start over; also its `journal_size_limit` (the size it is trimmed to)."""
    return WAL_CEILING_BYTES // 4


def connect_writer(path: str, synchronous: str) -> sqlite3.Connection:
    """A write connection: never waits on a lock (its caller retries without blocking), never checkpoints."""
    # check_same_thread off: with synchronous=FULL it is used from a thread of its own (always under the write lock).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=STATEMENT_CACHE)
    conn.row_factory = sqlite3.Row
    # temp_store=MEMORY: a statement journal (an UPDATE of many rows) never becomes a temporary file.
    for pragma in (
        "busy_timeout=0",
        "journal_mode=WAL",
        f"synchronous={synchronous}",
        "wal_autocheckpoint=0",
        f"journal_size_limit={wal_restart_bytes()}",
        "temp_store=MEMORY",
    ):
        _retry_busy_now(functools.partial(conn.execute, f"PRAGMA {pragma}"))
    return conn


def _retry_busy_now(step: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + BUSY_WAIT_S
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # only at open, before the service answers anything


def transact(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work` in one write transaction, rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock: worth retrying."""
    return "locked" in str(exc) or "busy" in str(exc)


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
            raise StoreError(
                f"another receiver is already serving {self.path[:-5]!r} "
                "(a SQLite file belongs to one process; use PostgreSQL for replicas)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def keep_wal_bounded(
    path: str, checkpointer: aiosqlite.Connection, written: asyncio.Event, write_lock: asyncio.Lock
) -> None:
    """Keep the WAL bounded, off the event loop. After writes, a PASSIVE checkpoint copies what it can
    while writes go on. Under steady writes that never empties the WAL, and SQLite starts a WAL over only
    once every frame is copied and no reader uses it. So past `wal_restart_bytes()` more PASSIVE passes
    copy what was written meanwhile (less each time), then a RESTART checkpoint runs with the store's
    writes held (`write_lock`: they queue in the group commit, the loop runs on): it copies the last few
    frames and waits out the readers, and the next write starts the WAL from its beginning
    (`journal_size_limit` trims the file). A TRUNCATE checkpoint makes writers wait out its fsyncs and
    truncation, so it is left for an idle store, and for a WAL that still grew past half the ceiling
    (readers kept the restarts from working): then with the writes held, so it cannot fail to finish."""
    while True:
        try:
            idle = not await wait_for(written, CHECKPOINT_EVERY_S * 4)
            if idle:
                await written.wait()
                continue
            await _pause(path)
            written.clear()
            await checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            size = wal_size(path)
            if size > WAL_CEILING_BYTES // 2:
                async with write_lock:
                    await checkpointer.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            elif size > wal_restart_bytes():
                for _ in range(3):  # each pass copies what was written during the one before: less each time
                    started = time.monotonic()
                    await checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
                    if time.monotonic() - started < 0.005:
                        break
                async with write_lock:
                    await checkpointer.execute_fetchall("PRAGMA wal_checkpoint(RESTART)")
            if not await wait_for(written, CHECKPOINT_EVERY_S * 2):
                await checkpointer.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")  # idle now
        except asyncio.CancelledError:
            raise
        except (sqlite3.Error, ValueError) as exc:  # busy or closing: the next round tries again
            log.warning("WAL checkpoint failed: %s", exc)


async def _pause(path: str) -> None:
    """CHECKPOINT_EVERY_S between checkpoints, cut short once the WAL passes its restart point: a fast load
    must not get half a second to grow it towards the ceiling. (A stat every WAL_LOOK_S costs microseconds.)"""
    for _ in range(int(CHECKPOINT_EVERY_S / WAL_LOOK_S)):
        await asyncio.sleep(WAL_LOOK_S)
        if wal_size(path) > wal_restart_bytes():
            return


def wal_size(path: str) -> int:
    try:
        return os.stat(path + "-wal").st_size
    except OSError:
        return 0
