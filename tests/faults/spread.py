"""Several replicas as providers and operators see them: webhooks spread round-robin over them, requests
that try the next replica until one answers, and who holds the Oxen stream (`/readyz`)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import random
import time
import uuid
from typing import Any

import httpx

from tests.fakes.pixazo import completed
from tests.fakes.runware import image
from tests.faults.common import hook_path
from tests.support import API_TOKEN, ReceiverProcess

GIVE_UP_S = 90.0  # a sender retrying one webhook this long means no replica ever took it


class SpreadLoad:
    """`senders` concurrent providers posting unique Pixazo and Runware completions, each attempt to the next
    replica in turn; a share of the webhooks goes to two replicas at once (a provider's retry racing its first
    try). A webhook without a 2xx is sent again until one comes, like a provider does."""

    def __init__(
        self, daemons: list[ReceiverProcess], senders: int, prefix: str, rand: random.Random, duplicate_share: float
    ) -> None:
        self.urls = [d.base_url for d in daemons]
        self.senders = senders
        self.prefix = prefix
        self.rand = rand
        self.duplicate_share = duplicate_share
        self.turn = itertools.count()
        self.ids = itertools.count(1)
        self.acked: dict[str, str] = {}  # provider job id → provider
        self.duplicated = 0  # webhooks sent to two replicas at once
        self.both_acked = 0  # … of which both answered 2xx
        self.given_up: list[str] = []
        self.attempts = 0
        self.refused = 0  # connection refused: that replica was down
        self.cut = 0  # the connection died before an answer (a kill, a restart)
        self.statuses: collections.Counter[int] = collections.Counter()  # non-2xx answers, whole run
        self.window: collections.Counter[int] = collections.Counter()  # … while `in_window` (the PostgreSQL restart)
        self.in_window = False
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sender()) for _ in range(self.senders)]

    async def stop(self) -> None:
        """Let each sender finish the webhook it is on (until acknowledged), then end."""
        self._stopping = True
        await asyncio.gather(*self._tasks)

    def _next_url(self) -> str:
        return self.urls[next(self.turn) % len(self.urls)]

    def _webhook(self, number: int) -> tuple[str, str, bytes]:
        """(provider, provider job id, body): Pixazo and Runware in turn."""
        if number % 2:
            request_id = f"{self.prefix}_{number}"
            return "pixazo", request_id, json.dumps(completed(request_id)).encode()
        task = str(uuid.UUID(int=self.rand.getrandbits(128), version=4))
        return "runware", task, json.dumps({"data": [image(task)]}).encode()

    async def _sender(self) -> None:
        limits = httpx.Limits(max_connections=len(self.urls) + 1, max_keepalive_connections=len(self.urls) + 1)
        async with httpx.AsyncClient(timeout=15, limits=limits) as client:
            while not self._stopping:
                await self._deliver(client, *self._webhook(next(self.ids)))

    async def _post(self, client: httpx.AsyncClient, url: str, path: str, body: bytes) -> bool:
        self.attempts += 1
        try:
            response = await client.post(url + path, content=body)
        except httpx.ConnectError:
            self.refused += 1
            return False
        except httpx.HTTPError:
            self.cut += 1
            return False
        if response.is_success:
            return True
        self.statuses[response.status_code] += 1
        if self.in_window:
            self.window[response.status_code] += 1
        return False

    async def _deliver(self, client: httpx.AsyncClient, provider: str, job_id: str, body: bytes) -> None:
        path = hook_path(provider)
        started = time.monotonic()
        twice = self.rand.random() < self.duplicate_share
        while True:
            if twice:  # the first attempt goes to two replicas at the same moment
                twice = False
                self.duplicated += 1
                answers = await asyncio.gather(*(self._post(client, self._next_url(), path, body) for _ in range(2)))
                self.both_acked += all(answers)
                ok = any(answers)
            else:
                ok = await self._post(client, self._next_url(), path, body)
            if ok:
                self.acked[job_id] = provider
                return
            if time.monotonic() - started > GIVE_UP_S:
                self.given_up.append(job_id)
                return
            await asyncio.sleep(0.02)


async def post_anywhere(daemons: list[ReceiverProcess], path: str, body: dict[str, Any], timeout: float = 60) -> Any:
    """POST an API request to one replica after another until one answers 2xx; its JSON."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10) as client:
        for number in itertools.count():
            daemon = daemons[number % len(daemons)]
            try:
                response = await client.post(daemon.base_url + path, json=body)
                if response.is_success:
                    return response.json()
                problem = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                problem = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica took POST {path}: {problem}")
            await asyncio.sleep(0.05)


async def stream_states(daemons: list[ReceiverProcess]) -> dict[int, str]:
    """Replica index → what its /readyz says of the Oxen stream (`down` when it does not answer)."""

    async def one(client: httpx.AsyncClient, daemon: ReceiverProcess) -> str:
        if not daemon.alive:
            return "down"
        try:
            return str((await client.get(daemon.base_url + "/readyz")).json().get("oxen_stream"))
        except (httpx.HTTPError, ValueError):
            return "down"

    async with httpx.AsyncClient(timeout=2) as client:
        states = await asyncio.gather(*(one(client, d) for d in daemons))
    return dict(enumerate(states))


async def wait_leader(daemons: list[ReceiverProcess], timeout: float, *, not_index: int | None = None) -> int | None:
    """The index of the replica whose /readyz says `connected` (other than `not_index`), once one does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = await stream_states(daemons)
        leaders = [i for i, s in states.items() if s == "connected" and i != not_index]
        if leaders:
            return leaders[0]
        await asyncio.sleep(0.05)
    return None


async def all_ready(
    daemons: list[ReceiverProcess], timeout: float, seen: collections.Counter[int] | None = None
) -> bool:
    """Until every replica's /readyz answers 200 (its store reachable); `seen` counts the answers."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            codes = []
            for daemon in daemons:
                try:
                    codes.append((await client.get(daemon.base_url + "/readyz")).status_code)
                except httpx.HTTPError:
                    codes.append(0)
                if seen is not None:
                    seen[codes[-1]] += 1
            if all(c == 200 for c in codes):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
