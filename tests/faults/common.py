"""What the scenarios share: the report, reading logs and the store back, and the load's timing. The receiver
as a killable process is `tests.support.ReceiverProcess` (with a `log_path`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import API_TOKEN, WEBHOOK_TOKEN


@dataclass
class Report:
    """What one scenario measured (`figures`, in order) and what did not hold (`problems`)."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, holds: bool, problem: str) -> None:
        if not holds:
            self.problems.append(problem)

    def text(self) -> str:
        width = max((len(k) for k in self.figures), default=0)
        lines = [f"== {self.name}: {'OK' if self.ok else 'FAILED'} ({self.elapsed_s:.1f} s)"]
        lines += [f"  {key:<{width}}  {_show(value)}" for key, value in self.figures.items()]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


def _show(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def log_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSON log records in a receiver's output file, and the lines that are not JSON objects."""
    records: list[dict[str, Any]] = []
    other: list[str] = []
    for line in path.read_text("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            other.append(line)
            continue
        if isinstance(value, dict):
            records.append(value)
        else:
            other.append(line)
    return records, other


def api_client(base_url: str, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30, **kwargs)


def hook_path(provider: str) -> str:
    return f"/webhooks/{provider}?token={WEBHOOK_TOKEN}"


async def all_pages(client: httpx.AsyncClient, path: str, key: str, **params: str) -> list[dict[str, Any]]:
    """Every item of a paginated /v1 listing."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": "500", **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query)
        response.raise_for_status()
        page = response.json()
        items += page[key]
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.1) -> bool:
    """Re-run `check` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


def retry_schedule(cover_s: float, *, first: float = 0.05, cap: float = 1.0) -> tuple[float, ...]:
    """Doubling waits from `first` up to `cap`, enough of them to keep retrying for at least `cover_s`."""
    steps: list[float] = []
    delay = first
    while sum(steps) < cover_s:
        steps.append(delay)
        delay = min(cap, delay * 2)
    return tuple(steps)
