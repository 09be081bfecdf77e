"""The database away (a TCP proxy the test owns, cut): each background worker says so once and says when it
is back, with no traceback; open `/v1/events` streams end cleanly (the client resumes with Last-Event-ID)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from httpx_sse import aconnect_sse

from receiver import logs
from receiver.app import create_app
from receiver.outage import Outage
from receiver.errors import StoreUnavailable
from tests.fakes.tcp_proxy import tcp_proxy, through
from tests.support import eventually, make_settings, serve_app

OUTAGE_S = 8.0


def receiver_lines(caplog: pytest.LogCaptureFixture, since: float) -> list[logging.LogRecord]:
    """What the receiver (and uvicorn) logged at INFO or above since `since` (time.time())."""
    return [r for r in caplog.records if r.created >= since and r.levelno >= logging.INFO
            and r.name.split(".")[0] in ("receiver", "uvicorn", "asyncpg")]


async def test_an_outage_is_logged_once_per_worker_and_its_end_once(
        tmp_path: Path, postgres_url: str, errors_logged: pytest.LogCaptureFixture) -> None:
    caplog = errors_logged
    root = logging.getLogger()
    kept = root.handlers[:]
    logs.configure()  # as `serve` sets up logging (what it quiets included); caplog's handler added back
    root.handlers[:] = kept
    caplog.set_level(logging.INFO)
    target = urlsplit(postgres_url)
    async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        # Every worker that uses the store: delivery, reconciler (a polling provider with a key), timeouts,
        # heartbeat, Lumenfall orphans, the media mirror.
        settings = make_settings(tmp_path, database_url=through(proxy, postgres_url), pixazo_api_key="pk",
                                 runware_api_key="rk", media_url=str(tmp_path / "media"), job_timeout_s=2.0)
        async with serve_app(create_app(settings)) as server, server.api() as api:
            ended = asyncio.Event()

            async def follow() -> None:
                async with aconnect_sse(api, "GET", "/v1/events", headers={"Last-Event-ID": "0"}) as source:
                    assert source.response.status_code == 200
                    async for _ in source.aiter_sse():
                        pass
                ended.set()  # the server ended the stream

            stream = asyncio.create_task(follow())
            await asyncio.sleep(1.0)  # the stream is open, the workers have run a pass or more
            cut_at = time.time()
            await proxy.cut()
            await eventually(lambda: ended.is_set(), what="the event stream ended by the outage")
            await stream
            await asyncio.sleep(OUTAGE_S)
            during = receiver_lines(caplog, cut_at)
            await proxy.restore()
            restored_at = time.time()

            def back_lines() -> list[logging.LogRecord]:
                return [r for r in receiver_lines(caplog, restored_at) if "store back after" in r.getMessage()]

            # Each worker that said the store was away says it is back, once the pass after works.
            down = [r for r in during if "store unavailable" in r.getMessage() or r.levelno >= logging.ERROR]
            await eventually(lambda: len(back_lines()) >= len({r.name + r.getMessage().split(":")[0] for r in down}),
                             what="a line per worker saying the store is back")
            assert (await api.get("/v1/jobs")).status_code == 200

    text = "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in during)
    assert all(r.exc_info is None for r in during), text  # no traceback
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()], text
    # Once per worker, not once per pass: about ten workers and loops, over OUTAGE_S at a pass a second or more.
    assert 1 <= len(during) <= 12, text
    whats = [r.getMessage().split(":")[0] for r in during]
    assert len(whats) == len(set(whats)), text  # none said it twice
    assert len(back_lines()) == len(set(r.getMessage().split(":")[0] for r in back_lines())), text


def test_outage_logs_the_first_failure_and_the_recovery() -> None:
    clock = [100.0]
    log = logging.getLogger("tests.outage")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        outage = Outage(log, "delivery", clock=lambda: clock[0])
        outage.ok()
        assert records == []
        for _ in range(5):
            outage.failed(StoreUnavailable("connection refused"))
            clock[0] += 1
        outage.ok()
        outage.ok()
        outage.failed(RuntimeError("a bug"))
    finally:
        log.removeHandler(handler)
    shown = [(r.levelno, r.getMessage()) for r in records if r.levelno >= logging.INFO]
    assert shown == [
        (logging.WARNING, "delivery: store unavailable (connection refused); retrying, next line when it is back"),
        (logging.INFO, "delivery: store back after 5.0 s (5 failed passes)"),
        (logging.ERROR, "delivery failed; retrying, next line when it works again"),
    ]
    assert records[-1].exc_info is not None  # not a store error: maybe a bug, so its traceback
    assert sum(r.levelno == logging.DEBUG for r in records) == 4
