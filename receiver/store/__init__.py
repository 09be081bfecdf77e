"""Stores behind one interface; `open_store` picks one from the database URL."""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs, urlsplit

from receiver.errors import StoreError
from receiver.store.base import (
    Attempt,
    Changes,
    Clock,
    Event,
    FinishedFilter,
    JobFilter,
    KeyClaim,
    Message,
    Page,
    Store,
)
from receiver.store.postgres.store import PostgresStore, describe
from receiver.store.sqlite.store import SQLiteStore

__all__ = [
    "Attempt",
    "Changes",
    "Clock",
    "Event",
    "FinishedFilter",
    "JobFilter",
    "KeyClaim",
    "Message",
    "Page",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "describe_store",
    "open_store",
    "sqlite_path",
]


def sqlite_path(url: str) -> tuple[str, dict[str, str]]:
    """`sqlite:///relative.db` → `relative.db`; `sqlite:////abs/x.db` → `/abs/x.db`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise StoreError(f"not a sqlite URL: {url[:40]!r}")
    rest = url[len(prefix) :]
    path, _, query = rest.partition("?")
    if not path:
        raise StoreError("sqlite URL needs a path, e.g. sqlite:///./receiver.db")
    options = {k.lower(): v[-1] for k, v in parse_qs(query).items()}
    return path, options


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else urlsplit(url).scheme.lower()


def describe_store(url: str) -> str:
    """Which store a URL names, for people: never a password."""
    scheme = _scheme(url)
    if scheme == "sqlite":
        return f"SQLite file {os.path.abspath(sqlite_path(url)[0])}"
    if scheme in ("postgres", "postgresql"):
        return f"PostgreSQL at {describe(url)}"
    return "an unknown store"


async def open_store(
    url: str,
    *,
    default_callback_url: str | None = None,
    reconcile_after_s: float = 300.0,
    clock: Clock = time.time,
    exclusive: bool = False,
    create: bool = True,
    mirroring: bool = False,
) -> Store:
    """Open the store `url` names. `exclusive`: this process serves it (SQLite: locks the file);
    `create`: make the store when missing (False for `receiver info`, which only reads);
    `mirroring`: succeeded jobs' outputs are mirrored before their event and callback (receiver.media.mirror)."""
    scheme = _scheme(url)
    if scheme == "sqlite":
        path, options = sqlite_path(url)
        synchronous = options.get("synchronous", "normal").upper()
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"unknown synchronous mode {synchronous!r}")
        return await SQLiteStore(
            path,
            default_callback_url=default_callback_url,
            reconcile_after_s=reconcile_after_s,
            synchronous=synchronous,
            clock=clock,
            exclusive=exclusive,
            create=create,
            mirroring=mirroring,
        ).open()
    if scheme in ("postgres", "postgresql"):
        return await PostgresStore(
            url,
            default_callback_url=default_callback_url,
            reconcile_after_s=reconcile_after_s,
            clock=clock,
            create=create,
            mirroring=mirroring,
        ).open()
    raise StoreError(f"unsupported database URL scheme {scheme!r}: use sqlite:///… or postgresql://…")
