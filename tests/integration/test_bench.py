"""The benchmark's building blocks (scripts/benchlib.py), small: what they count must be true.

No timing is asserted: these check that the load generators' books balance against the store
(every 2xx is a job, nothing else is), that a fast burst on Oxen's stream is applied whole and in
order through the pipelined consumer, and that the prefilled store is one the receiver opens.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import httpx

from receiver.app import create_app
from scripts import benchlib as bl
from scripts import benchpg
from tests.fakes.oxen import API_KEY as OXEN_KEY
from tests.support import eventually, make_settings, serve_app


async def test_closed_loop_load_stores_exactly_the_acknowledged_webhooks(tmp_path: Path) -> None:
    async with serve_app(create_app(make_settings(tmp_path))) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        result = await bl.closed_loop(port, bl.HOOK_PATH, bl.pixazo_webhook, prefix="t", seconds=0.5, connections=8)
    assert result.ok > 8 and result.failed == 0 and result.unanswered == 0
    db = tmp_path / "receiver.db"
    assert bl.count_jobs(db, "pixazo") == result.ok  # every 2xx is a job, and nothing else is
    assert bl.count_rows(db, "SELECT COUNT(*) FROM receipts WHERE outcome = 'applied'") == result.ok


async def test_open_loop_webhooks_each_reach_the_callback_sink_once(tmp_path: Path) -> None:
    sink = await bl.CallbackSink().start()
    try:
        async with serve_app(create_app(make_settings(tmp_path, default_callback_url=sink.url))) as server:
            port = int(server.base_url.rsplit(":", 1)[1])
            keys = [f"e2e-{i}" for i in range(40)]
            records = await bl.open_loop(port, bl.HOOK_PATH, bl.pixazo_webhook, keys, rate=200)
            assert [r.status for r in records] == [200] * len(keys)
            await eventually(lambda: len(sink.arrivals) == len(keys), what="every callback")
            assert set(sink.arrivals) == set(keys) and sink.duplicates == 0
            assert all(sink.arrivals[r.key] > r.sent_at for r in records)
    finally:
        await sink.close()


async def test_a_fast_stream_burst_is_applied_whole_and_in_order(tmp_path: Path) -> None:
    oxen = await bl.OxenStream().start()
    ids = [f"burst-{i}" for i in range(600)]
    try:
        app = create_app(make_settings(tmp_path, oxen_api_key=OXEN_KEY, oxen_base_url=oxen.base_url))
        async with serve_app(app):
            await asyncio.wait_for(oxen.connected.wait(), 10)
            oxen.send(b"event: other_event\ndata: {}\n\n" + b"".join(bl.oxen_event(i) for i in ids))
            db = tmp_path / "receiver.db"
            await eventually(lambda: bl.count_jobs(db, "oxen") == len(ids), what="every completion applied")
    finally:
        await oxen.close()
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT source, outcome, provider_job_ids FROM receipts ORDER BY id").fetchall()
    conn.close()
    assert {(source, outcome) for source, outcome, _ in rows} == {("stream", "applied")}
    assert [json.loads(pids)[0] for _, _, pids in rows] == ids  # one receipt per event, kept in stream order


async def test_a_prefilled_store_is_one_the_receiver_serves(tmp_path: Path) -> None:
    bl.prefill_store(tmp_path / "receiver.db", 1000)
    async with serve_app(create_app(make_settings(tmp_path))) as server, server.api() as api:
        page = (await api.get("/v1/jobs", params={"limit": 2})).json()
        assert len(page["jobs"]) == 2 and page["next_cursor"]
        job = (await api.get(f"/v1/jobs/{page['jobs'][0]['id']}")).json()
        assert job["status"] == "succeeded" and job["outputs"][0]["media_type"] == "image/jpeg"
        receipts = (await api.get("/v1/receipts", params={"limit": 1})).json()["receipts"]
        assert receipts[0]["outcome"] == "applied"
        async with server.client() as client:
            reply = await client.post(bl.HOOK_PATH, content=bl.pixazo_webhook("after-prefill"))
        assert reply.status_code == 200 and reply.json()["outcome"] == "applied"
    assert bl.count_rows(tmp_path / "receiver.db", "SELECT COUNT(*) FROM jobs") == 1001


def test_a_load_split_over_two_postgres_replicas_stores_exactly_the_acknowledged_webhooks(
    tmp_path: Path, postgres_url: str
) -> None:
    env = bl.receiver_env(tmp_path / "unused.db", RECEIVER_DATABASE_URL=postgres_url)
    replicas = [bl.Served(f"pg-{i}", "receiver.app:create_app", tmp_path, env=env, factory=True) for i in range(2)]
    try:
        for replica in replicas:
            replica.start()
        before = benchpg.backend_cpu(postgres_url)
        result = benchpg.split_load("built-in", replicas, "split", 1.0, 8, tmp_path)
        used = benchpg.cpu_used(before, benchpg.backend_cpu(postgres_url))
    finally:
        for replica in replicas:
            replica.stop()
    assert result.ok > 8 and result.failed == 0 and result.unanswered == 0
    assert benchpg.count_jobs(postgres_url, "pixazo") == result.ok  # every 2xx is a job, and nothing else is
    assert result.cpu_s > 0 and used > 0
    assert benchpg.commits(postgres_url) > 0


async def test_the_bare_endpoint_answers_like_the_receiver(tmp_path: Path) -> None:
    """The baseline does the receiver's HTTP work: reads the body, a 200 JSON answer of the same shape;
    `--bounded` adds the receiver's request bounds (so they can be measured apart)."""
    plain = bl.Served("bare", "", tmp_path, env=bl.receiver_env(tmp_path / "unused.db"), bare=True)
    bounded = bl.Served("bounded", "", tmp_path, env=bl.receiver_env(tmp_path / "unused.db"), bare=True, bounded=True)
    refusals: list[bytes] = []
    for bare in (plain, bounded):
        await asyncio.to_thread(bare.start)
        try:
            async with httpx.AsyncClient(base_url=bare.base_url) as client:
                answer = await client.post(bl.HOOK_PATH, content=bl.pixazo_webhook("bare-1"))
            # A request head sent in pieces past 64 KiB: receiver.web.server's bound refuses it; uvicorn has none.
            reader, writer = await asyncio.open_connection("127.0.0.1", bare.port)
            answered = asyncio.create_task(reader.read(200))  # in before a refusal breaks the pipe
            try:
                writer.write(f"POST {bl.HOOK_PATH} HTTP/1.1\r\nHost: x\r\n".encode())
                for _ in range(10):
                    await asyncio.sleep(0.05)
                    writer.write(b"x-pad: " + b"x" * 8000 + b"\r\n")
                writer.write(b"content-length: 2\r\n\r\n{}")
            except ConnectionError:
                pass  # refused and closed before the rest was written
            refusals.append(await asyncio.wait_for(answered, 30))
            writer.close()
        finally:
            await asyncio.to_thread(bare.stop)
    async with serve_app(create_app(make_settings(tmp_path))) as server, server.client() as client:
        receiver = await client.post(bl.HOOK_PATH, content=bl.pixazo_webhook("bare-1"))
    assert answer.status_code == receiver.status_code == 200
    assert answer.headers["content-type"] == receiver.headers["content-type"] == "application/json"
    assert answer.json().keys() == receiver.json().keys() and answer.json()["outcome"] == "applied"
    assert abs(len(answer.content) - len(receiver.content)) <= 8
    assert refusals[0].startswith(b"HTTP/1.1 200 ") and refusals[1].startswith(b"HTTP/1.1 431 ")


def test_every_benchmark_the_docs_name_exists() -> None:
    """`--only` names in the README and docs/benchmarks.md are benchmarks `python -m scripts.bench` knows."""
    import re
    from pathlib import Path

    from scripts.bench import BENCHES

    root = Path(__file__).resolve().parents[2]
    named = {
        name
        for doc in ("README.md", "docs/benchmarks.md")
        for group in re.findall(r"scripts\.bench --only ([a-z0-9,-]+)", (root / doc).read_text())
        for name in group.split(",")
    }
    assert "sinks" in named and named <= set(BENCHES), named - set(BENCHES)
