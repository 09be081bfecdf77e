"""The ledger benchmark (`python -m scripts.bench ledger`, scripts/ledger*.py), run short.

A few seconds at a low rate on SQLite must balance; each of the bench's own faults (a callback dropped,
delivered twice or under a second webhook-id by its callback server, a webhook lost from its books)
must make the run VOID with the reason and exit 1. The accounting is also checked on made-up books,
the load generator on a server that answers nothing until every webhook is in (an open loop never
waits for answers), and the sink check on a real Redis stream. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from receiver.app import create_app
from scripts import ledger
from scripts.benchlib import HOOK_PATH, ROOT, pixazo_webhook
from scripts.ledger import Callback, Webhook, reckon
from scripts.ledger_load import OpenLoop
from tests.support import make_settings, serve_app


def run_ledger(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.bench",
            "ledger",
            "--stores",
            "sqlite",
            "--warmup",
            "0",
            "--settle",
            "0.5",
            *flags,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_short_sqlite_run_balances() -> None:
    done = run_ledger("--rate", "40", "--seconds", "2", "--refuse-every", "8")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sqlite, fixed, 40 webhooks/s for 2 s: BALANCED" in done.stdout
    assert "sent 80 (scheduled 80) = 2xx 70 + refused 10 + errors 0" in done.stdout
    assert "jobs 70 (of them for errored webhooks: 0); called back 70; duplicate deliveries 0" in done.stdout
    assert "VOID" not in done.stdout and "every ledger balanced" in done.stdout


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("drop", "1 jobs never called back"),
        ("duplicate", "1 duplicate deliveries"),
        ("second-id", "1 jobs called back under more than one webhook-id"),
        ("lose-webhook", "20 webhooks scheduled but 19 in the books"),
    ],
)
def test_an_unbalanced_ledger_is_void(fault: str, reason: str) -> None:
    done = run_ledger("--rate", "20", "--seconds", "1", "--drain-timeout", "20", "--fault", fault)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "sqlite, fixed, 20 webhooks/s for 1 s: VOID" in done.stdout
    assert f"  VOID: {reason}" in done.stdout
    assert "every ledger balanced" not in done.stdout


def _books(n: int, status: int = 200) -> list[Webhook]:
    return [Webhook(f"k-{i}", float(i), float(i), i + 0.002, status, None) for i in range(n)]


def _called_back(jobs: list[tuple[str, str]]) -> list[Callback]:
    return [Callback(f"msg_{job_id}", job_id, key, "job.succeeded", 10.0, True) for job_id, key in jobs]


def test_balanced_books_and_their_latencies() -> None:
    jobs = [(f"job_{i}", f"k-{i}") for i in range(3)]
    lg = reckon(3, _books(3), jobs, _called_back(jobs))
    assert lg.balanced and (lg.ok, lg.refused, lg.error_count, lg.called_back) == (3, 0, 0, 3)
    assert [round(x, 3) for x in lg.ack_ms] == [2.0, 2.0, 2.0]
    assert [round(x) for x in lg.callback_ms] == [10_000, 9_000, 8_000]  # from each webhook's due time


def test_each_kind_of_violation_is_named() -> None:
    books = _books(4)
    books[1].status = 401
    books[1].meant_refused = True
    books[2].status, books[2].error, books[2].answered = None, "timeout", None
    jobs = [("job_0", "k-0"), ("job_1", "k-1"), ("job_2", "k-2"), ("job_x", "stranger")]
    callbacks = [*_called_back(jobs[:3]), Callback("msg_y", "job_y", "k-y", "job.succeeded", 1.0, False)]
    lg = reckon(4, books, jobs, callbacks)
    assert lg.stored_despite_error == 1  # a job for a webhook that timed out is allowed
    assert lg.errors == {"timeout": 1}
    assert {v.split(" (")[0] for v in lg.violations} == {
        "1 webhooks answered 2xx without a job",  # k-3
        "1 refused webhooks stored as jobs",  # k-1
        "1 jobs for webhooks not in the books",  # stranger
        "1 callbacks for jobs the store does not hold",  # job_y
        "1 callbacks whose signature does not verify",  # job_y
        "1 jobs never called back",  # job_x
    }


def test_a_sink_missing_an_event_is_a_violation() -> None:
    jobs = [(f"job_{i}", f"k-{i}") for i in range(3)]
    events = [(7, "job_0"), (8, "job_1"), (9, "job_2")]
    assert reckon(3, _books(3), jobs, _called_back(jobs), events, {7: "job_0", 8: "job_1", 9: "job_2"}).balanced
    lg = reckon(3, _books(3), jobs, _called_back(jobs), events, {7: "job_0", 9: "job_1"})
    assert lg.in_sink == 1
    assert lg.violations == [
        "2 events not in the sink's stream under their id and job (event 8 (job_1), event 9 (job_2))"
    ]


async def test_the_open_loop_writes_on_schedule_whatever_the_answers() -> None:
    """The server answers nothing until every webhook is in: a closed loop would wait forever on the first."""
    count = 12
    arrived: list[asyncio.StreamWriter] = []
    everything_in = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        arrived.append(writer)
        if len(arrived) == count:
            everything_in.set()
        await everything_in.wait()
        writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    load = OpenLoop([port], "t", count, 100.0, refuse_every=0, timeout=60, max_connections=64)
    try:
        await asyncio.wait_for(load.run(), 120)
    finally:
        for writer in arrived:
            writer.close()
        server.close()
    assert load.status == [202] * count
    assert load.opened == count  # none was ever free again before the last was due
    sent = [s for s in load.sent if s is not None]
    answered = [a for a in load.answers if a is not None]
    assert len(sent) == len(answered) == count and max(sent) < min(answered)


async def test_the_sink_check_reads_a_redis_stream() -> None:
    import redis.asyncio as redis  # a test dependency only: the bench needs it only with --sink-redis

    stream = f"receiver:ledger-test-{uuid.uuid4().hex[:8]}"
    url = f"redis://127.0.0.1:6379/0?stream={stream}"
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        for event_id, job_id in ((3, "job_a"), (5, "job_c")):
            await client.xadd(stream, {"type": "job.succeeded", "subject": job_id, "event": "{}"}, id=f"{event_id}-0")
        found = await ledger._read_stream(url, [(3, "job_a"), (4, "job_b"), (5, "job_c")], timeout=0.5)
    finally:
        await client.delete(stream)
        await client.aclose()
    assert found == {3: "job_a", 5: "job_c"}


def test_a_sink_url_gets_a_stream_of_the_runs_own(tmp_path: Path) -> None:
    opts = ledger.Options(
        1, 1, 0, False, 1.25, 1, 1, 1, 0, 0, 1, 8, None, "redis://127.0.0.1:6379/2?maxlen=0", tmp_path
    )
    url = ledger._sink_url(opts, "pg-2")
    assert url is not None and url.startswith(
        "redis://127.0.0.1:6379/2?maxlen=0&stream=receiver%3Aevents%3Aledger-pg-2-"
    )
    assert ledger._redis_stream(url)[0] == "redis://127.0.0.1:6379/2"


async def test_the_sink_check_reads_each_jobs_event_from_the_receiver(tmp_path: Path) -> None:
    async with serve_app(create_app(make_settings(tmp_path))) as server:
        async with server.client() as client:
            for key in ("ev-1", "ev-2", "ev-3"):
                assert (await client.post(HOOK_PATH, content=pixazo_webhook(key))).status_code == 200
        async with httpx.AsyncClient(timeout=30) as client:
            jobs = await ledger._list_jobs(client, server.base_url, "ev-", "2000-01-01T00:00:00Z")
            events = await ledger._read_events(client, server.base_url, 0, {j for j, _ in jobs}, timeout=30)
    assert sorted(key for _, key in jobs) == ["ev-1", "ev-2", "ev-3"]
    assert sorted(job_id for _, job_id in events) == sorted(job_id for job_id, _ in jobs)
    assert [event_id for event_id, _ in events] == sorted({event_id for event_id, _ in events})
