"""Stores behind one interface; `open_store` picks one from `RECEIVER_DATABASE_URL`."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

from receiver.errors import StoreError
from receiver.store.base import Attempt, Changes, Clock, Event, Message, Page, Store
from receiver.store.sqlite import SQLiteStore

__all__ = ["Attempt", "Changes", "Clock", "Event", "Message", "Page", "SQLiteStore", "Store", "open_store", "sqlite_path"]


def sqlite_path(url: str) -> tuple[str, dict[str, str]]:
    """`sqlite:///relative.db` → `relative.db`; `sqlite:////abs/x.db` → `/abs/x.db`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise StoreError(f"not a sqlite URL: {url!r}")
    rest = url[len(prefix):]
    path, _, query = rest.partition("?")
    if not path:
        raise StoreError("sqlite URL needs a path, e.g. sqlite:///./receiver.db")
    options = {k.lower(): v[-1] for k, v in parse_qs(query).items()}
    return path, options


async def open_store(
    url: str, *, default_callback_url: str | None = None, reconcile_after_s: float = 300.0,
    clock: Clock = time.time,
) -> SQLiteStore:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        path, options = sqlite_path(url)
        synchronous = options.get("synchronous", "normal").upper()
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"unknown synchronous mode {synchronous!r}")
        store = SQLiteStore(
            path, default_callback_url=default_callback_url, reconcile_after_s=reconcile_after_s,
            synchronous=synchronous, clock=clock,
        )
        return await store.open()
    if scheme in ("postgres", "postgresql"):
        raise StoreError("PostgreSQL is not implemented yet: use sqlite:///… (see README, Store)")
    raise StoreError(f"unsupported RECEIVER_DATABASE_URL scheme {scheme!r}")
