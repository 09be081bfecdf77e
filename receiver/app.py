"""`create_app()`: the explicit composition of routes, shared resources and background workers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import standardwebhooks
from standardwebhooks.webhooks import EmptyWebhookSecretError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from receiver import logs
from receiver.api import actions as job_actions
from receiver.api import events, generations, inspector, openapi, ops
from receiver.api import jobs as api
from receiver.api import sinks as sink_routes
from receiver.delivery.worker import run_delivery
from receiver.errors import ReceiverError, StoreError, StoreUnavailable
from receiver.front import Receiver
from receiver.ingest import webhooks
from receiver.ingest.lumenfall_calls import fail_orphaned_lumenfall_calls
from receiver.ingest.oxen_stream import run_oxen_consumer
from receiver.ingest.reconciler import run_reconciler
from receiver.ingest.timeouts import run_job_timeouts
from receiver.leader import lead
from receiver.media.mirror import run_mirror
from receiver.media.routes import serve_media
from receiver.media.service import media_target, open_media
from receiver.metrics import Metrics
from receiver.notify import Notifier, wait_for
from receiver.outage import Outage
from receiver.refusals import run_refusals
from receiver.runtime import Runtime, resolve_secrets
from receiver.settings import Settings
from receiver.sinks.publisher import run_sinks
from receiver.store import Clock, describe_store, open_store
from receiver.tuning import REPLICAS, DeliveryLimits, MirrorTuning, StreamTuning
from receiver.web.auth import BearerAuth, body_too_large, invalid_request
from receiver.web.http import BodyTooLarge, client_gone, http_error, internal_error
from receiver.web.validation import Invalid

log = logging.getLogger("receiver.app")

Worker = Callable[[Runtime], Coroutine[Any, Any, None]]


async def run_oxen_leader(runtime: Runtime) -> None:
    """Oxen's stream is consumed by one replica at a time; the others stand by."""

    def standby() -> None:
        runtime.oxen.state, runtime.oxen.last_error = "standby", None

    await lead(runtime, "oxen_stream", run_oxen_consumer, on_standby=standby)


async def run_heartbeat(runtime: Runtime) -> None:
    """Say this replica is alive, so that the calls it owns are not taken for orphans."""
    outage = Outage(log, "heartbeat")
    while not runtime.stopping.is_set():
        await wait_for(runtime.stopping, REPLICAS.heartbeat_s)
        try:
            await runtime.store.heartbeat()
            outage.ok()
        except StoreError as exc:
            outage.failed(exc)


def workers_for(settings: Settings) -> list[Worker]:
    """The background loops this configuration needs."""
    workers: list[Worker] = [
        run_delivery,
        run_reconciler,
        run_heartbeat,
        fail_orphaned_lumenfall_calls,
        run_job_timeouts,
    ]
    workers.append(run_refusals)
    if settings.api_key("oxen") is not None:
        workers.append(run_oxen_leader)
    workers.append(run_mirror)  # with mirroring off it only settles tasks queued while it was on
    if settings.sinks:
        workers.append(run_sinks)
    return workers


# Young objects (net of those freed) that start a collection of the youngest generation: under load the
# requests in flight keep hundreds alive, so with Python's 700 a collection ran every few requests' worth of
# allocations, each walking them all (docs/benchmarks.md).
YOUNG_COLLECTION_OBJECTS = 3000


def settle_startup_objects() -> None:
    """Move what exists once the app is up (modules, settings, the runtime: ~70k objects that live as long as
    the process) out of the cyclic collector's way, once per process. Else every full collection walks them
    all: ~30 ms, several times a second under load (a tenth of ingest's CPU, docs/benchmarks.md). And let
    the youngest generation grow to YOUNG_COLLECTION_OBJECTS before it is collected."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION_OBJECTS, *gc.get_threshold()[1:])


async def unavailable(request: Request, exc: Exception) -> Response:
    """The database is away (restarting, unreachable, locked): nothing was acknowledged, retry later."""
    log.warning("%s %s: store unavailable: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"error": "store_unavailable", "message": "the store is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": "1", "Connection": "close"},
    )


async def open_runtime(
    settings: Settings,
    *,
    clock: Clock = time.time,
    serving: bool = True,
    delivery_limits: DeliveryLimits | None = None,
    stream_tuning: StreamTuning | None = None,
    mirror_tuning: MirrorTuning | None = None,
    metrics_clock: Callable[[], float] = time.monotonic,
) -> Runtime:
    """The store, secrets and clients. `serving`: this process serves (takes the SQLite file's lock,
    creates the store); else it only reads an existing store (`receiver info`). `metrics_clock` times
    the cache of /metrics' job counts."""
    store = await open_store(
        settings.database_url,
        default_callback_url=settings.default_callback_url,
        reconcile_after_s=settings.reconcile_after_s,
        clock=clock,
        exclusive=serving,
        create=serving,
        mirroring=media_target(settings).enabled,
    )
    try:
        if serving:
            await store.heartbeat()  # before any call it owns can be looked at by another replica
        secrets = await resolve_secrets(settings, store)
        logs.protect_secrets(settings, secrets)  # from here on no log line can show one
        try:
            standardwebhooks.Webhook(secrets.signing_secret)
        except (ValueError, EmptyWebhookSecretError):  # not base64 (or not ASCII), or nothing after `whsec_`
            raise ReceiverError("RECEIVER_SIGNING_SECRET must be a whsec_… base64 secret") from None
        media = await open_media(settings, store, shared_store=store.backstop_s is not None) if serving else None
    except BaseException:
        await store.close()
        raise
    notifier = Notifier()
    store.add_listener(notifier.on_changes)
    return Runtime(
        settings=settings,
        secrets=secrets,
        store=store,
        notifier=notifier,
        metrics=Metrics(clock=metrics_clock),
        http=httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=False),
        delivery_limits=delivery_limits or DeliveryLimits(),
        stream_tuning=stream_tuning or StreamTuning(),
        mirror_tuning=mirror_tuning or MirrorTuning(),
        media=media,
    )


async def home(request: Request) -> Response:
    """`GET /`: the inspector (behind a proxy's prefix too)."""
    return RedirectResponse(f"{request.scope.get('root_path', '')}/ui/", status_code=307)


def inspector_url(settings: Settings) -> str:
    """Where a browser on this machine (or the public URL, when set) opens the inspector."""
    if settings.public_url is not None:
        return f"{settings.base_public_url}/ui/"
    host = "127.0.0.1" if settings.host.strip("[]") in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}/ui/"


def api_routes() -> list[Route]:
    """The `/v1` routes (mounted behind `BearerAuth`)."""
    return [
        Route("/jobs", api.register_job, methods=["POST"]),
        Route("/jobs", api.list_jobs, methods=["GET"]),
        Route("/generations", generations.create_generation, methods=["POST"]),
        Route("/jobs/{job_id}", api.get_job, methods=["GET"]),
        Route("/jobs/{job_id}/deliveries", api.list_deliveries, methods=["GET"]),
        Route("/jobs/{job_id}", job_actions.patch_job, methods=["PATCH"]),
        Route("/jobs/{job_id}/cancel", job_actions.cancel_job, methods=["POST"]),
        Route("/jobs/{job_id}/redeliver", job_actions.redeliver, methods=["POST"]),
        Route("/redeliveries", job_actions.redeliver_many, methods=["POST"]),
        Route("/receipts", api.list_receipts, methods=["GET"]),
        Route("/refusals", api.list_refusals, methods=["GET"]),
        Route("/events", events.stream_events, methods=["GET"]),
        Route("/stats", inspector.stats, methods=["GET"]),
        Route("/sinks", sink_routes.list_sinks, methods=["GET"]),
        Route("/sinks/{name}/rewind", sink_routes.rewind, methods=["POST"]),
        Route("/sinks/{name}/pause", sink_routes.pause, methods=["POST"]),
        Route("/sinks/{name}/resume", sink_routes.resume, methods=["POST"]),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock = time.time,
    delivery_limits: DeliveryLimits | None = None,
    stream_tuning: StreamTuning | None = None,
    mirror_tuning: MirrorTuning | None = None,
    metrics_clock: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The app; `delivery_limits` bound the callback worker, `stream_tuning` and `mirror_tuning` time the
    Oxen consumer and the media mirror (defaults: `DeliveryLimits()`, `StreamTuning()`, `MirrorTuning()`);
    `metrics_clock` times the cache of /metrics' job counts."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Runtime]]:
        runtime = await open_runtime(
            settings,
            clock=clock,
            delivery_limits=delivery_limits,
            stream_tuning=stream_tuning,
            mirror_tuning=mirror_tuning,
            metrics_clock=metrics_clock,
        )
        app.state.runtime = runtime  # for `serve`'s signal handler and the tests; routes use request.state
        tasks = [
            asyncio.create_task(worker(runtime), name=getattr(worker, "__name__", "worker"))
            for worker in workers_for(settings)
        ]
        log.info(
            "receiver ready: public URL %s, store %s", settings.base_public_url, describe_store(settings.database_url)
        )
        log.info(
            "inspector: %s (sign in with the API token; `receiver info` prints the tokens and webhook URLs)",
            inspector_url(settings),
        )
        if settings.public_url_unreachable:
            log.warning(
                "RECEIVER_PUBLIC_URL is not set and no tunnel was found: providers cannot reach %s, so "
                "POST /v1/generations is refused until it is set",
                settings.base_public_url,
            )
        settle_startup_objects()
        try:
            yield {"runtime": runtime}
        finally:
            runtime.stopping.set()
            runtime.notifier.wake_all()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runtime.close()

    routes = [
        Route(webhooks.PATH, webhooks.WebhookEndpoint(), methods=["POST"]),  # first: the busiest
        Route("/", home, methods=["GET", "HEAD"]),
        Route("/healthz", ops.healthz),
        Route("/readyz", ops.readyz),
        Route("/metrics", ops.metrics),
        Route("/openapi.json", openapi.openapi_json),
        Route("/asyncapi.json", sink_routes.asyncapi_json),
        Mount("/v1", routes=api_routes(), middleware=[Middleware(BearerAuth)]),
        inspector.ui_mount(),
        Route("/media/{rest:path}", serve_media, methods=["GET", "HEAD"]),
    ]
    handlers = {
        StoreUnavailable: unavailable,
        ClientDisconnect: client_gone,
        Invalid: invalid_request,
        BodyTooLarge: body_too_large,
        HTTPException: http_error,
        Exception: internal_error,
    }
    return Receiver(routes=routes, lifespan=lifespan, exception_handlers=handlers)
