"""The inspector's API (v0.3): paged lists with totals and prefix search, refused requests, attempts in full."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from receiver.app import create_app
from receiver.refusals import RefusalQueue
from receiver.store.refusal_rows import Refusal
from tests.fakes.callback import Reply, callback_server
from tests.support import API_TOKEN, WEBHOOK_TOKEN, RunningServer, eventually, make_settings, serve_app

APIFRAME_KEY = "apiframe-test-key"


def pixazo_done(request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "status": "COMPLETED",
        "output": {"media_url": [f"http://127.0.0.1:9/{request_id}.jpeg"], "media_type": "image/jpeg"},
    }


async def test_job_list_pages_counts_and_finds_by_prefix(store_url: str, tmp_path: Path) -> None:
    async with serve_app(create_app(make_settings(tmp_path, database_url=store_url))) as server:
        async with server.api() as api:
            ids = [
                (await api.post("/v1/jobs", json={"provider": "pixazo", "provider_job_id": f"px-{i:03d}"})).json()["id"]
                for i in range(60)
            ]
            first = (await api.get("/v1/jobs")).json()
            assert len(first["jobs"]) == 50 and first["total"] == 60 and first["total_exact"] is True
            rest = (await api.get("/v1/jobs", params={"cursor": first["next_cursor"]})).json()
            assert "total" not in rest and rest["next_cursor"] is None
            assert [j["id"] for j in first["jobs"] + rest["jobs"]] == ids[::-1]
            found = (await api.get("/v1/jobs", params={"prefix": "px-05"})).json()
            assert sorted(j["provider_job_id"] for j in found["jobs"]) == [f"px-{i:03d}" for i in range(50, 60)]
            assert found["total"] == 10
            by_id = (await api.get("/v1/jobs", params={"prefix": ids[7][:-2]})).json()
            assert ids[7] in [j["id"] for j in by_id["jobs"]] and all(
                j["id"].startswith(ids[7][:-2]) for j in by_id["jobs"]
            )
            too_long = await api.get("/v1/jobs", params={"prefix": "x" * 300})
            assert too_long.status_code == 422 and "prefix" in too_long.text
            receipts = (await api.get("/v1/receipts")).json()
            assert receipts["total"] == 0 and receipts["total_exact"] is True


async def test_refused_requests_are_listed_masked_newest_first(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_body_bytes=2048, apiframe_api_key=APIFRAME_KEY)
    async with serve_app(create_app(settings)) as server:
        async with server.client() as client, server.api() as api:
            assert (await client.get("/v1/refusals")).status_code == 401
            wrong = await client.post(
                "/webhooks/pixazo?token=guess-1&run=7",
                json={"request_id": "px-a"},
                headers={"Authorization": "Bearer secret-bearer", "Cookie": "s=secret-cookie", "X-Trace": "t-1"},
            )
            assert wrong.status_code == 401
            assert (await client.post(f"/webhooks/midjourney?token={WEBHOOK_TOKEN}", content=b"{}")).status_code == 404
            big = await client.post(f"/webhooks/runware?token={WEBHOOK_TOKEN}", content=b"[" + b"1," * 5000 + b"1]")
            assert big.status_code == 413
            signed = await client.post(
                f"/webhooks/apiframe?token={WEBHOOK_TOKEN}",
                json={"jobId": "af-1"},
                headers={"X-Webhook-Signature": "forged-signature-value"},
            )
            assert signed.status_code == 401
            invalid = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=b"not json")
            assert invalid.status_code == 400
            listed = await eventually(lambda: _refusals(api, 5), what="five refusals")
            page = (await api.get("/v1/refusals", params={"limit": 2})).json()
            rest = (await api.get("/v1/refusals", params={"cursor": page["next_cursor"]})).json()
            by_reason = (await api.get("/v1/refusals", params={"reason": "too_large"})).json()
            assert (await api.get("/v1/refusals", params={"reason": "nope"})).status_code == 422
    assert [r["reason"] for r in listed] == [
        "invalid_body",
        "bad_signature",
        "too_large",
        "unknown_provider",
        "unauthorized",
    ]
    assert [r["status"] for r in listed] == [400, 401, 413, 404, 401]
    assert [r["id"] for r in page["refusals"] + rest["refusals"]] == [r["id"] for r in listed]
    assert page["total"] == 5 and "total" not in rest
    assert [r["reason"] for r in by_reason["refusals"]] == ["too_large"]
    unauthorized = listed[-1]
    assert unauthorized["provider"] == "pixazo" and unauthorized["query"] == "token=***&run=7"
    assert unauthorized["headers"]["authorization"] == "***" and unauthorized["headers"]["cookie"] == "***"
    assert unauthorized["headers"]["x-trace"] == "t-1"
    assert json.loads(unauthorized["body"]) == {"request_id": "px-a"}  # what arrived, though refused
    assert listed[3]["provider"] == "midjourney"
    assert listed[2]["body_bytes"] == 10003 and listed[2]["body_truncated"] is True
    assert listed[1]["headers"]["x-webhook-signature"] == "***"
    assert listed[0]["receipt_id"] == invalid.json()["receipt_id"] and listed[0]["body"] == "not json"
    text = json.dumps(listed)
    for secret in ("guess-1", WEBHOOK_TOKEN, "secret-bearer", "secret-cookie", "forged-signature-value", API_TOKEN):
        assert secret not in text


async def _refusals(api: Any, n: int) -> list[dict[str, Any]] | None:
    found = (await api.get("/v1/refusals")).json()["refusals"]
    return found if len(found) >= n else None


async def test_the_answer_never_waits_for_the_refusal_to_be_recorded(server: RunningServer) -> None:
    store = server.runtime.store
    blocked = asyncio.Event()
    release = asyncio.Event()
    real = store.record_refusals

    async def stuck(refusals: list[Refusal], **kw: Any) -> None:
        blocked.set()
        await release.wait()
        await real(refusals, **kw)

    store.record_refusals = stuck
    try:
        async with server.client() as client, server.api() as api:
            assert (await client.post("/webhooks/pixazo?token=wrong", content=b"{}")).status_code == 401
            await asyncio.wait_for(blocked.wait(), 20)
            # The writer is stuck in the store: the door still answers every refused request at once.
            for _ in range(20):
                assert (await client.post("/webhooks/pixazo?token=wrong", content=b"{}")).status_code == 401
            release.set()
            await eventually(lambda: _refusals(api, 21), what="all 21 refusals")
    finally:
        release.set()
        store.record_refusals = real


def test_a_full_queue_drops_and_counts_instead_of_growing() -> None:
    queue = RefusalQueue(capacity=3)
    dropped: list[int] = []
    queue.on_drop = lambda: dropped.append(1)
    r = Refusal("pixazo", "unauthorized", 401, None, "POST", "/webhooks/pixazo", "", {}, b"", 0, 0.0)
    assert [queue.offer(r) for _ in range(5)] == [True, True, True, False, False]
    assert len(queue) == 3 and len(dropped) == 2
    assert len(queue.take(10)) == 3 and len(queue) == 0
    by_size = RefusalQueue(capacity=100, max_bytes=100)  # big bodies fill it by bytes before count
    big = Refusal("pixazo", "unauthorized", 401, None, "POST", "/webhooks/pixazo", "", {}, b"x" * 60, 60, 0.0)
    assert [by_size.offer(big) for _ in range(3)] == [True, False, False]
    by_size.take(1)
    assert by_size.offer(big) is True  # taken bytes are given back


async def test_a_flood_is_answered_and_counted_in_the_metric(server: RunningServer) -> None:
    server.runtime.refusals.capacity = 0  # a queue that is always full: every refusal is a drop
    async with server.client() as client:
        for _ in range(5):
            assert (await client.post("/webhooks/pixazo?token=wrong", content=b"{}")).status_code == 401
        metrics = (await client.get("/metrics")).text
    assert "receiver_refusals_dropped_total 5.0" in metrics


async def test_a_flood_of_refusals_never_grows_the_store_past_its_bound(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import receiver.refusals

    monkeypatch.setattr(receiver.refusals, "REFUSALS_KEPT", 25)
    async with serve_app(create_app(make_settings(tmp_path, database_url=store_url))) as server:
        async with server.client() as client, server.api() as api:

            async def refused(i: int) -> int:
                return (await client.post(f"/webhooks/pixazo?token=flood-{i}", content=b'{"n": %d}' % i)).status_code

            codes = await asyncio.gather(*(refused(i) for i in range(300)))
            metrics = server.runtime.metrics
            await eventually(
                lambda: metrics.refusals_recorded._value.get() + metrics.refusals_dropped._value.get() == 300,
                what="every refusal recorded or dropped",
            )
            listed = (await api.get("/v1/refusals", params={"limit": 100})).json()
    assert codes == [401] * 300
    assert listed["total"] == 25 and len(listed["refusals"]) == 25  # the newest 25, never more
    assert all(r["query"].startswith("token=***") for r in listed["refusals"])


async def test_attempts_keep_what_was_sent_and_what_came_back(tmp_path: Path) -> None:
    long_answer = b"busy " * 2000
    script = (Reply(503, {"X-Reason": "maintenance", "Set-Cookie": "sid=abc"}, long_answer), Reply(200, {}, b"thanks"))
    async with callback_server(*script) as callback:
        async with serve_app(create_app(make_settings(tmp_path))) as server:
            async with server.client() as client, server.api() as api:
                job = (
                    await api.post(
                        "/v1/jobs",
                        json={"provider": "pixazo", "provider_job_id": "px-x", "callback_url": callback.url()},
                    )
                ).json()
                await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", json=pixazo_done("px-x"))
                await eventually(lambda: len(callback.requests) == 2)
                deliveries = await eventually(lambda: _deliveries(api, job["id"], 2))
    failed, ok = deliveries
    sent = callback.requests[0]
    assert failed["request"]["headers"]["webhook-signature"] == sent.headers["webhook-signature"]
    assert failed["request"]["headers"]["webhook-id"] == failed["message_id"]
    assert json.loads(failed["request"]["body"]) == json.loads(sent.body)
    assert failed["response"]["status_code"] == 503
    assert failed["response"]["headers"]["x-reason"] == "maintenance"
    assert failed["response"]["headers"]["set-cookie"] == "***"
    assert failed["response"]["body"] == long_answer[:4096].decode()
    assert ok["response"]["body"] == "thanks" and ok["response"]["status_code"] == 200
    text = json.dumps(deliveries)
    assert "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in text  # never the signing secret


async def _deliveries(api: Any, job_id: str, n: int) -> list[dict[str, Any]] | None:
    found = (await api.get(f"/v1/jobs/{job_id}/deliveries")).json()["deliveries"]
    return found if len(found) >= n else None


async def test_stats_name_the_public_url(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, public_url="https://hooks.example.test")
    async with serve_app(create_app(settings)) as server, server.api() as api:
        stats = (await api.get("/v1/stats")).json()
    assert stats["public_url"] == "https://hooks.example.test"


async def test_receipts_list_their_headers_with_signatures_masked(server: RunningServer) -> None:
    async with server.client() as client, server.api() as api:
        await client.post(
            f"/webhooks/pixazo?token={WEBHOOK_TOKEN}",
            json=pixazo_done("px-h"),
            headers={"X-Webhook-Signature": "sha256=deadbeef", "Webhook-Id": "wh_1"},
        )
        receipt = (await api.get("/v1/receipts")).json()["receipts"][0]
    assert receipt["headers"]["x-webhook-signature"] == "***"
    assert receipt["headers"]["webhook-id"] == "wh_1" and receipt["headers"]["content-type"] == "application/json"
    assert "deadbeef" not in json.dumps(receipt)


async def test_a_huge_declared_length_never_stops_refusals_being_recorded(store_url: str, tmp_path: Path) -> None:
    """A Content-Length past what a database column holds (httptools accepts it) is kept bounded; the
    refusals after it are still recorded."""
    async with serve_app(create_app(make_settings(tmp_path, database_url=store_url))) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST /webhooks/pixazo?token={WEBHOOK_TOKEN} HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 9223372036854775808\r\n\r\n{{}}".encode()
        )
        await writer.drain()
        try:
            assert (await reader.readline()).startswith(b"HTTP/1.1 413")  # refused before any byte is read
        finally:
            writer.close()
            await writer.wait_closed()
        async with server.client() as client:
            assert (await client.post("/webhooks/pixazo?token=wrong-again", content=b"{}")).status_code == 401
        async with server.api() as api:

            async def both() -> list[dict[str, Any]] | None:
                refusals = (await api.get("/v1/refusals")).json()["refusals"]
                return refusals if len(refusals) == 2 else None

            refusals = await eventually(both, 10, "both refusals recorded")
        assert refusals is not None and 2**62 >= max(r["body_bytes"] for r in refusals)


def test_the_queue_weighs_everything_a_refusal_holds_and_batches_by_bytes() -> None:
    headers = {f"x-h{i}": "v" * 1000 for i in range(60)}  # ~60 KB of headers and no body
    heavy = Refusal("pixazo", "unauthorized", 401, "d" * 500, "POST", "/webhooks/pixazo", "", headers, b"", 0, 0.0)
    queue = RefusalQueue(capacity=1000, max_bytes=200_000)
    assert [queue.offer(heavy) for _ in range(4)] == [True, True, True, False]  # headers count, not only bodies
    assert len(queue.take(100, max_bytes=130_000)) == 2 and len(queue) == 1  # a batch is bounded by bytes


def test_credential_headers_are_masked_by_name() -> None:
    from receiver.web.masking import masked_headers

    kept = masked_headers(
        [
            (b"X-Auth-Token", b"tok-1"),
            (b"X-Session-Key", b"sess-2"),
            (b"X-Trace", b"t"),
            (b"X-Repeat", b"a" * 900),
            (b"X-Repeat", b"b" * 900),
        ]
    )
    assert kept["x-auth-token"] == "***" and kept["x-session-key"] == "***" and kept["x-trace"] == "t"
    assert len(kept["x-repeat"]) <= 1024  # a repeated header stays one bounded value
