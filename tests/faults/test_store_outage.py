"""The database away (a TCP proxy the test owns, cut): each background worker says so once and says when it
is back, with no traceback; open `/v1/events` streams end cleanly (the client resumes with Last-Event-ID)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from httpx_sse import aconnect_sse

from receiver.errors import StoreUnavailable
from receiver.outage import Outage
from tests.fakes.oxen import FakeOxen
from tests.fakes.tcp_proxy import tcp_proxy, through
from tests.integration.ingest.test_oxen_stream import API_KEY as OXEN_KEY
from tests.support import API_TOKEN, ReceiverProcess, eventually, process_env

OUTAGE_S = 8.0


def lines_of(output: str) -> list[str]:
    """The log lines of a `receiver serve` (one per record; a traceback's lines count too)."""
    return [line for line in output.splitlines() if line.strip()]


async def test_an_outage_is_logged_once_per_worker_and_its_end_once(
    tmp_path: Path, postgres_url: str, fake_oxen: FakeOxen
) -> None:
    target = urlsplit(postgres_url)
    async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        # `receiver serve` as run, its logging as configured there. Every worker that uses the store:
        # delivery, reconciler (polling providers with a key), job timeouts, heartbeat, Lumenfall orphans,
        # the media mirror, the Oxen stream's lease and consumer, PostgreSQL's LISTEN connection.
        env = process_env(
            tmp_path,
            RECEIVER_DATABASE_URL=through(proxy, postgres_url),
            RECEIVER_PIXAZO_API_KEY="pk",
            RECEIVER_RUNWARE_API_KEY="rk",
            RECEIVER_MEDIA_URL=str(tmp_path / "media"),
            RECEIVER_JOB_TIMEOUT_S="2",
            RECEIVER_OXEN_API_KEY=OXEN_KEY,
            RECEIVER_OXEN_BASE_URL=fake_oxen.base_url,
        )
        proc = ReceiverProcess(env, cwd=tmp_path)
        await asyncio.to_thread(proc.start)  # its start goes through the proxy, served by this loop
        try:
            async with httpx.AsyncClient(
                base_url=proc.base_url, timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}
            ) as api:
                ended = asyncio.Event()

                async def follow() -> None:
                    async with aconnect_sse(api, "GET", "/v1/events", headers={"Last-Event-ID": "0"}) as source:
                        assert source.response.status_code == 200
                        async for _ in source.aiter_sse():
                            pass
                    ended.set()  # the server ended the stream

                stream = asyncio.create_task(follow())
                await asyncio.sleep(1.5)  # the stream is open, the workers have run a pass or more
                before = len(lines_of(proc.output()))
                await proxy.cut()
                await eventually(lambda: ended.is_set(), what="the event stream ended by the outage")
                await stream
                await asyncio.sleep(OUTAGE_S)
                during = lines_of(proc.output())[before:]
                await proxy.restore()

                def back() -> list[str]:
                    return [
                        line for line in lines_of(proc.output())[before + len(during) :] if "store back after" in line
                    ]

                said_down = [line for line in during if "store unavailable" in line]
                await eventually(
                    lambda: len(back()) >= len(said_down), timeout=40, what="a line per worker saying the store is back"
                )
                assert (await api.get("/v1/jobs")).status_code == 200
        finally:
            await asyncio.to_thread(proc.stop)

    text = "\n".join(during)
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text
    assert len(said_down) >= 6, text  # the workers did notice
    # Once per worker, not once per pass, over OUTAGE_S at a pass a second or more; besides, only changes of
    # state (the Oxen lease, not renewed in time, is given up), each once.
    assert len(said_down) <= 14, text
    others = [line.split(" ", 2)[2] for line in during if line not in said_down]
    assert len(others) <= 2 and len(others) == len(set(others)), text
    whats = [line.split(": ", 1)[1].split(":")[0] for line in said_down]
    assert len(whats) == len(set(whats)), text  # none said it twice
    assert len(back()) == len(said_down), "\n".join(back())


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
