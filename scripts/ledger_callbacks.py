"""The downstream callback server of `python -m scripts.bench ledger`, run in a process of its own:

    python -m scripts.ledger_callbacks --secret whsec_… [--fault drop|duplicate|second-id]

It prints `LISTENING <port>`, answers every `POST /hook` 200 and records, for each callback, its
`webhook-id`, the job id and provider_job_id from its body, its type, whether its Standard Webhooks
signature verifies, and when it arrived (`time.monotonic()`, the load generator's clock).
`GET /records?run=R` answers the records of the webhooks whose request ids are `R-<n>`, `GET /count?run=R`
how many distinct jobs those are. It stops on SIGTERM or when its standard input closes.

`--fault` makes the books wrong on purpose, so that the ledger's checks can be seen to catch it: the
first callback is answered 200 but not recorded (`drop`), recorded twice (`duplicate`), or recorded
again under another webhook-id (`second-id`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import socket
import sys
import time
import urllib.parse

import uvloop
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:[ \t]*(\d+)")
FAULTS = ("drop", "duplicate", "second-id")
Record = tuple[str, str, str, str, float, bool]  # webhook-id, job id, provider_job_id, type, arrival, signed


class CallbackServer:
    def __init__(self, secret: str, fault: str | None) -> None:
        self.verifier = Webhook(secret)
        self.fault = fault
        # By run: a request id is `<run prefix>-<n>`, so counting one run's callbacks never scans another's.
        self.records: dict[str, list[Record]] = collections.defaultdict(list)
        self.jobs: dict[str, set[str]] = collections.defaultdict(set)

    def handle(self, head: bytes, body: bytes) -> tuple[str, bytes]:
        arrival = time.monotonic()
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        if method == "GET":
            url = urllib.parse.urlsplit(target)
            run = urllib.parse.parse_qs(url.query).get("run", [""])[0]
            if url.path == "/count":
                return "200 OK", json.dumps({"jobs": len(self.jobs.get(run, ()))}).encode()
            if url.path == "/records":
                return "200 OK", json.dumps({"records": self.records.get(run, [])}).encode()
            return "404 Not Found", b"{}"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        try:
            self.verifier.verify(body, headers, json_parse=False)
            signed = True
        except WebhookVerificationError:
            signed = False
        message = json.loads(body)
        data = message["data"]
        record = (headers.get("webhook-id", ""), data["id"], data["provider_job_id"], message["type"], arrival, signed)
        run = record[2].rpartition("-")[0]
        records = self.records[run]
        fault, self.fault = self.fault, None  # a fault strikes the first callback only
        if fault != "drop":
            records.append(record)
            self.jobs[run].add(record[1])
        if fault == "duplicate":
            records.append(record)
        elif fault == "second-id":
            records.append((record[0] + "-again", *record[1:]))
        return "200 OK", b"ok"


class _Protocol(asyncio.Protocol):
    """Just enough HTTP/1.1: content-length framed requests on kept-alive connections."""

    def __init__(self, server: CallbackServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            found = _CONTENT_LENGTH.search(self.buffer, 0, end + 2)
            total = end + 4 + (int(found.group(1)) if found else 0)
            if len(self.buffer) < total:
                return
            head, body = bytes(self.buffer[:end]), bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            status, answer = self.server.handle(head, body)
            assert self.transport is not None
            self.transport.write(
                f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(answer)}\r\n\r\n".encode()
                + answer
            )


async def serve(secret: str, fault: str | None) -> None:
    loop = asyncio.get_running_loop()
    app = CallbackServer(secret, fault)
    server = await loop.create_server(lambda: _Protocol(app), "127.0.0.1", 0, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.ledger_callbacks")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--fault", choices=FAULTS)
    args = parser.parse_args()
    uvloop.run(serve(args.secret, args.fault))


if __name__ == "__main__":
    main()
