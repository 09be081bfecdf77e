"""The shared resources of one running app, opened in the lifespan and handed to routes and workers."""

from __future__ import annotations

import asyncio
import logging
import secrets as random_secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from receiver.logs import FinishedLines
from receiver.metrics import Metrics
from receiver.models import StreamState
from receiver.notify import Notifier
from receiver.refusals import RefusalQueue
from receiver.settings import Secrets, Settings
from receiver.signing import new_signing_secret
from receiver.store import Store
from receiver.tuning import DeliveryLimits, MirrorTuning, StreamTuning

if TYPE_CHECKING:
    from receiver.media.service import Media


@dataclass
class StreamStatus:
    """What /readyz says of the Oxen consumer."""

    state: StreamState = "disabled"
    last_error: str | None = None


@dataclass
class Runtime:
    settings: Settings
    secrets: Secrets
    store: Store
    notifier: Notifier
    metrics: Metrics
    http: httpx.AsyncClient  # for calls to providers (submit, poll, stream)
    oxen: StreamStatus = field(default_factory=StreamStatus)
    delivery_limits: DeliveryLimits = field(default_factory=DeliveryLimits)
    stream_tuning: StreamTuning = field(default_factory=StreamTuning)  # the Oxen consumer's timings
    mirror_tuning: MirrorTuning = field(default_factory=MirrorTuning)  # the media mirror's timings
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    background: set[asyncio.Task[None]] = field(default_factory=set)  # request-started work, see spawn()
    refusals: RefusalQueue = field(default_factory=RefusalQueue)  # refused requests on their way to the store
    media: Media | None = None  # the media mirror; None with RECEIVER_MEDIA_URL=off (and for `receiver info`)
    # `job … finished` at INFO, a line per burst (see FinishedLines)
    finished_lines: FinishedLines = field(
        default_factory=lambda: FinishedLines(logging.getLogger("receiver.ingest.inbound"))
    )

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run `work` past the request that started it; close() cancels and awaits whatever is left."""
        task = asyncio.create_task(work, name=name)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def close(self) -> None:
        # Before the store closes: a cancelled task may still record how it ended.
        pending = list(self.background)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.http.aclose()
        await self.store.close()


async def resolve_secrets(settings: Settings, store: Store) -> Secrets:
    """Each secret from the environment, else the one generated once and kept in the store."""

    async def pick(name: str, configured: SecretStr | None, generate: Callable[[], str]) -> str:
        return configured.get_secret_value() if configured is not None else await store.secret(name, generate)

    return Secrets(
        api_token=await pick("api_token", settings.api_token, lambda: random_secrets.token_urlsafe(32)),
        webhook_token=await pick("webhook_token", settings.webhook_token, lambda: random_secrets.token_urlsafe(24)),
        signing_secret=await pick("signing_secret", settings.signing_secret, new_signing_secret),
    )
