"""`create_app()`: the explicit composition of routes, shared resources and background workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator, Callable, Coroutine

import standardwebhooks
from starlette.applications import Starlette
from starlette.routing import Route

import httpx

from receiver import api, events, generations, inspector, logs, ops, webhooks
from receiver.delivery import run_delivery
from receiver.generations import fail_orphaned_lumenfall_calls
from receiver.oxen_stream import run_oxen_consumer
from receiver.reconciler import run_reconciler
from receiver.errors import ReceiverError
from receiver.metrics import Metrics
from receiver.notify import EVENTS, Notifier
from receiver.runtime import Runtime, resolve_secrets
from receiver.settings import Settings
from receiver.store import Clock, open_store

log = logging.getLogger("receiver.app")

Worker = Callable[[Runtime], Coroutine[Any, Any, None]]


def workers_for(settings: Settings) -> list[Worker]:
    """The background loops this configuration needs."""
    workers: list[Worker] = [run_delivery, run_reconciler, fail_orphaned_lumenfall_calls]
    if settings.oxen_api_key is not None:
        workers.append(run_oxen_consumer)
    return workers


async def open_runtime(settings: Settings, *, clock: Clock = time.time) -> Runtime:
    store = await open_store(
        settings.database_url, default_callback_url=settings.default_callback_url,
        reconcile_after_s=settings.reconcile_after_s, clock=clock,
    )
    try:
        secrets = await resolve_secrets(settings, store)
        logs.protect_secrets(settings, secrets)  # from here on no log line can show one
        try:
            standardwebhooks.Webhook(secrets.signing_secret)
        except Exception:
            raise ReceiverError("RECEIVER_SIGNING_SECRET must be a whsec_… base64 secret") from None
    except BaseException:
        await store.close()
        raise
    notifier = Notifier()
    store.add_listener(notifier.on_changes)
    return Runtime(
        settings=settings, secrets=secrets, store=store, notifier=notifier, metrics=Metrics(),
        http=httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=False),
    )


def create_app(settings: Settings | None = None, *, clock: Clock = time.time) -> Starlette:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await open_runtime(settings, clock=clock)
        app.state.runtime = runtime
        tasks = [asyncio.create_task(worker(runtime), name=getattr(worker, "__name__", "worker"))
                 for worker in workers_for(settings)]
        log.info("receiver ready: public URL %s, store %s", settings.base_public_url, settings.database_url.split("?")[0])
        try:
            yield
        finally:
            runtime.stopping.set()
            runtime.notifier.publish(EVENTS)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runtime.close()

    routes = [
        Route("/healthz", ops.healthz),
        Route("/readyz", ops.readyz),
        Route("/metrics", ops.metrics),
        Route("/webhooks/{provider}", webhooks.receive_webhook, methods=["POST"]),
        Route("/v1/jobs", api.register_job, methods=["POST"]),
        Route("/v1/jobs", api.list_jobs, methods=["GET"]),
        Route("/v1/generations", generations.create_generation, methods=["POST"]),
        Route("/v1/jobs/{job_id}", api.get_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}/deliveries", api.list_deliveries, methods=["GET"]),
        Route("/v1/jobs/{job_id}/redeliver", api.redeliver, methods=["POST"]),
        Route("/v1/receipts", api.list_receipts, methods=["GET"]),
        Route("/v1/events", events.stream_events, methods=["GET"]),
        Route("/v1/stats", inspector.stats, methods=["GET"]),
        inspector.ui_mount(),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
