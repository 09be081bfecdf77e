"""The physical limit the receiver is measured against: Starlette on uvicorn that reads the body and answers
the webhook's 200 JSON, and nothing else.

`python -m scripts.bare_app --port N` serves it with `receiver serve`'s uvicorn settings (httptools,
uvloop, no server header, proxy headers, 5 s graceful shutdown) but uvicorn's own httptools protocol
and no access log: the receiver's request bounds (`receiver.server.BoundedHttpTools`) and its access-log
check are work it does on top, so they belong to its side of the ratio. `--bounded` serves it with the
receiver's protocol instead, to measure what those bounds cost.
"""

from __future__ import annotations

import argparse
import itertools

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.web.server import server_config

_numbers = itertools.count(1)


async def receive(request: Request) -> Response:
    await request.body()
    number = next(_numbers)
    # The receiver's answer, the same shape and size, encoded the same way.
    payload = orjson.dumps({"receipt_id": number, "outcome": "applied", "job_ids": [f"job_{number:032x}"]})
    return Response(payload, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(
    routes=[
        Route("/webhooks/{provider}", receive, methods=["POST"]),
        Route("/healthz", healthz),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bare_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bounded", action="store_true", help="with the receiver's request bounds")
    args = parser.parse_args()
    options = {
        "host": args.host,
        "port": args.port,
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": True,
        "timeout_graceful_shutdown": 5,
    }
    if args.bounded:
        config = server_config(app, **options)
    else:
        config = uvicorn.Config(app, http="httptools", loop="uvloop", server_header=False, **options)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
