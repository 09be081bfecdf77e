"""The physical limit the receiver is measured against: Starlette on uvicorn that reads the body and answers
the webhook's 200 JSON, and nothing else.

`python -m scripts.bare_app --port N` serves it with the uvicorn configuration of `receiver serve`
(`receiver.server.server_config`: httptools with the receiver's request bounds, uvloop, no server header,
proxy headers, 5 s graceful shutdown), with no access log: the receiver by default writes no access
line for an accepted webhook either. So the ratio between the two is the cost of everything the receiver
does on top (its access-log policy check, the store, the rules, its logging), not of a different server.
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

from receiver.server import server_config

_numbers = itertools.count(1)


async def receive(request: Request) -> Response:
    await request.body()
    number = next(_numbers)
    # The receiver's answer, the same shape and size, encoded the same way.
    payload = orjson.dumps({"receipt_id": number, "outcome": "applied", "job_ids": [f"job_{number:032x}"]})
    return Response(payload, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[
    Route("/webhooks/{provider}", receive, methods=["POST"]),
    Route("/healthz", healthz),
])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bare_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = server_config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                           proxy_headers=True, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
