"""The physical limit the receiver is measured against: Starlette on uvicorn that only reads the body.

Served by `python -m scripts.bench` exactly like the receiver (same `uvicorn` command and options), on the
same path, so the ratio between the two is the cost of everything the receiver does on top.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def receive(request: Request) -> Response:
    await request.body()
    return Response(status_code=202)


async def healthz(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(
    routes=[
        Route("/webhooks/{provider}", receive, methods=["POST"]),
        Route("/healthz", healthz),
    ]
)
