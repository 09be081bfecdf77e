"""Operations routes: liveness, readiness, metrics (no auth, nothing secret in them)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.errors import StoreError
from receiver.metrics import CONTENT_TYPE
from receiver.runtime import Runtime
from receiver.sinks.publisher import refresh_sink_metrics

log = logging.getLogger("receiver.api.ops")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    body: dict[str, object] = {"oxen_stream": runtime.oxen.state}
    if runtime.oxen.last_error:
        body["oxen_stream_error"] = runtime.oxen.last_error
    try:
        await runtime.store.ping()
        body["store"] = "ok"
        status = 200
    except StoreError as exc:
        log.error("store unreachable: %s", exc)
        body["store"] = "unreachable"
        status = 503
    return JSONResponse(body, status_code=status)


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    await refresh_sink_metrics(runtime)
    body = await runtime.metrics.render(runtime.store, stream_state=runtime.oxen.state)
    return Response(body, media_type=CONTENT_TYPE)
