"""SQLite's group commit in a process of its own, so the event loop serves requests while SQLite writes.

`receiver serve` spends a third of its event loop in the group commit: the rules, the rows and SQLite's
own work, none of which needs the loop. Here that runs in a child process (`main`) that owns a second
write connection to the same file. The parent sends a batch (the writes, pickled) over a socket pair and awaits the answer; the child commits it in one
transaction and answers with each write's result. The parent holds its write lock meanwhile, so the
child's transactions and the parent's other writes never meet; and it answers no webhook before the
child has answered its COMMIT, so a crash of either loses nothing acknowledged.

The child ignores SIGINT and SIGTERM (they are the parent's to act on, which then finishes its queued
commits) and leaves when its socket closes: when the parent closes the store, or dies.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

from receiver.errors import StoreError, StoreUnavailable
from receiver.store.batching import Item, UnitArgs

_HEADER = struct.Struct("!Q")
READY_TIMEOUT_S = 30.0  # the child's start: an interpreter, the store's modules, the connection
EXIT_TIMEOUT_S = 10.0  # after its socket closes, the child finishes the transaction it is in and exits

Answer = tuple[list[Any], list[str], bool]  # each write's result, terminal job ids, messages queued


def frame(value: object) -> bytes:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])  # the child imports the same `receiver` as the parent


class WriterProcess:
    """The parent's side: starts the child, sends it batches, one at a time (the caller's write lock)."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.path = os.path.abspath(path)
        self.synchronous = synchronous
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")))))
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "import sys; from receiver.store.sqlite.writer import main; main(int(sys.argv[1]))",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        self._writer.write(frame((self.path, self.synchronous)))
        try:
            answer = await asyncio.wait_for(self._receive(), READY_TIMEOUT_S)
        except (StoreUnavailable, TimeoutError):
            await self.close()
            raise StoreError("the SQLite writer process did not start") from None
        if answer[0] != "ready":
            await self.close()
            raise StoreError(f"the SQLite writer process could not open the file: {answer[1]}")

    async def commit(self, unit: UnitArgs, batch: list[Item]) -> Answer:
        """The batch in one transaction. Raises sqlite3.OperationalError when another process holds the
        lock (the caller retries), StoreUnavailable when the child is gone (the next commit starts another)."""
        if self._writer is None:
            await self.start()
        assert self._writer is not None
        self._writer.write(frame((unit, batch)))
        answer = await self._receive()
        if answer[0] == "ok":
            return answer[1]  # type: ignore[no-any-return]
        if answer[0] == "busy":
            raise sqlite3.OperationalError(answer[1])
        raise StoreError(f"store write failed: {answer[1]}")

    async def _receive(self) -> tuple[Any, ...]:
        assert self._reader is not None
        try:
            (size,) = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
            return pickle.loads(await self._reader.readexactly(size))  # type: ignore[no-any-return]
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise StoreUnavailable("the SQLite writer process exited") from None

    async def close(self) -> None:
        """Close its socket and wait for it to leave (killed if it does not)."""
        writer, proc = self._writer, self._proc
        self._reader = self._writer = self._proc = None
        if writer is not None:
            writer.close()
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), EXIT_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None  # the parent closed the socket
    (size,) = _HEADER.unpack(header)
    return pickle.loads(stream.read(size))


def main(fd: int) -> None:
    """The child: commit what arrives on socket `fd` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _serve(fd)


def _serve(fd: int) -> None:
    # Imported here: the parent imports this module for WriterProcess and needs none of this.
    from receiver.store.rules import UnitOfWork
    from receiver.store.sqlite.file import connect_writer, is_busy, transact
    from receiver.store.sqlite.writes import commit_batch

    with socket.socket(fileno=fd) as sock, sock.makefile("rb") as stream:
        path, synchronous = _receive(stream)
        try:
            db = connect_writer(path, synchronous)
        except sqlite3.Error as exc:
            sock.sendall(frame(("error", f"{type(exc).__name__}: {exc}")))
            return
        sock.sendall(frame(("ready",)))
        while (request := _receive(stream)) is not None:
            args, batch = request
            unit = UnitOfWork(**args)
            try:
                results = transact(db, functools.partial(commit_batch, unit=unit, batch=batch))
                answer: tuple[Any, ...] = ("ok", (results, unit.terminal_job_ids, unit.queued_messages))
            except sqlite3.OperationalError as exc:
                answer = ("busy", str(exc)) if is_busy(exc) else ("error", f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # deliberate: the parent finds the culprit one write at a time
                answer = ("error", f"{type(exc).__name__}: {exc}")
            try:
                sock.sendall(frame(answer))
            except OSError:
                break  # the parent is gone: what was committed stays, unanswered (its senders retry)
        db.close()
