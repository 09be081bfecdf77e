"""Edges an outside probe found: each bad input gets a clear 4xx (or the documented 502), never a 5xx;
ids and URLs that cannot work are refused; provider text never leaks a secret; /metrics stays cheap."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from receiver.app import create_app
from tests.fakes import apiframe as af
from tests.fakes import pixazo as px
from tests.fakes.callback import Reply, callback_server
from tests.fakes.harness import serve_receiver
from tests.fakes.hostile import HostileProvider, raw
from tests.support import API_TOKEN, WEBHOOK_TOKEN, RunningServer, errors, eventually, make_settings, serve_app

GENERATE = {"provider": "pixazo", "prompt": "a red fox"}


# -- no 5xx on bad input ----------------------------------------------------------------------------


async def test_a_non_ascii_idempotency_key_is_a_422(tmp_path: Path) -> None:
    fake = af.FakeApiframe()
    async with (
        fake.serve(),
        serve_receiver(tmp_path, apiframe_api_key=af.API_KEY, apiframe_base_url=fake.base_url) as server,
    ):
        async with server.api() as api:
            reply = await api.post(
                "/v1/generations",
                json={"provider": "apiframe", "prompt": "a red fox"},
                headers={"Idempotency-Key": b"key-\xff-1"},
            )
        assert reply.status_code == 422, reply.text
        assert reply.json()["fields"][0]["field"] == "Idempotency-Key"
        assert fake.requests_to("/v2/images/generate") == []


async def test_a_refusal_holding_a_lone_surrogate_is_the_normal_502(tmp_path: Path) -> None:
    hostile = HostileProvider(default=raw(b'{"message": "no credit \\ud800 left"}', status=402))
    async with (
        hostile.serve(),
        serve_receiver(tmp_path, pixazo_api_key=px.API_KEY, pixazo_base_url=hostile.base_url) as server,
    ):
        async with server.api() as api:
            reply = await api.post("/v1/generations", json=GENERATE)
        assert reply.status_code == 502, reply.text
        assert reply.json() == {"error": "provider_refused", "message": "no credit ? left", "provider_status": 402}


async def test_an_accepted_id_holding_a_lone_surrogate_is_a_clear_502(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = HostileProvider(default=raw(b'{"request_id": "grok_\\ud800", "status": "QUEUED"}', status=202))
    async with (
        hostile.serve(),
        serve_receiver(tmp_path, pixazo_api_key=px.API_KEY, pixazo_base_url=hostile.base_url) as server,
    ):
        async with server.api() as api:
            reply = await api.post("/v1/generations", json=GENERATE)
            assert reply.status_code == 502, reply.text
            assert "unexpected answer from pixazo" in reply.json()["message"]
            assert "surrogate" in reply.json()["message"]
            assert (await api.get("/v1/jobs")).json()["jobs"] == []
    assert any("grok_\\\\ud800" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_a_webhook_cut_mid_body_is_no_error(
    server: RunningServer, errors_logged: pytest.LogCaptureFixture
) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /webhooks/pixazo?token={WEBHOOK_TOKEN} HTTP/1.1\r\nHost: x\r\n"
        'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"request_id": '.encode()
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    await asyncio.sleep(0.3)
    async with server.api() as api:
        assert (await api.get("/v1/receipts")).json()["receipts"] == []
    assert errors(errors_logged) == []


async def test_an_unhandled_error_answers_json_and_closes(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, errors_logged: pytest.LogCaptureFixture
) -> None:
    async def broken(job_id: str) -> Any:
        raise RuntimeError("the store broke")

    monkeypatch.setattr(server.runtime.store, "get_job", broken)
    async with server.api() as api:
        reply = await api.get("/v1/jobs/job_1")
    assert reply.status_code == 500
    assert reply.json() == {"error": "internal_error", "message": "the receiver failed to answer this request"}
    assert reply.headers["connection"] == "close"
    assert errors(errors_logged)  # still an ERROR with its traceback: it is a bug


# -- ids and URLs that cannot work ------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider_job_id",
    [" spaced", "tail ", "a\tb", "a\nb", "\t", "a\x00b"],
    ids=["leading-space", "trailing-space", "tab", "newline", "only-a-tab", "nul"],
)
async def test_provider_job_ids_adapters_would_never_match_are_422(server: RunningServer, provider_job_id: str) -> None:
    async with server.api() as api:
        reply = await api.post("/v1/jobs", json={"provider": "pixazo", "provider_job_id": provider_job_id})
        assert reply.status_code == 422, reply.text
        assert reply.json()["fields"][0]["field"] == "provider_job_id"
        assert (await api.get("/v1/jobs")).json()["jobs"] == []


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "file:///etc/passwd", "ftp://x/y.png", "https://cdn.test/" + "a" * 9000 + ".png"],
    ids=["javascript", "file", "ftp", "over-8192-characters"],
)
async def test_output_urls_that_cannot_work_make_the_message_invalid(server: RunningServer, url: str) -> None:
    body = {"request_id": "grok_1", "status": "COMPLETED", "output": {"media_url": [url]}}
    async with server.client() as client, server.api() as api:
        reply = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", json=body)
        assert reply.status_code == 400, reply.text
        assert "output URL" in reply.json()["message"]
        (receipt,) = (await api.get("/v1/receipts")).json()["receipts"]
        assert receipt["outcome"] == "invalid"
        assert (await api.get("/v1/jobs")).json()["jobs"] == []


async def test_data_uris_and_ordinary_urls_still_apply(server: RunningServer) -> None:
    data_uri = "data:image/png;base64," + "A" * 200_000
    body = {
        "request_id": "grok_2",
        "status": "COMPLETED",
        "output": {"media_url": [data_uri, "HTTPS://cdn.test/x.png"]},
    }
    async with server.client() as client:
        reply = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", json=body)
    assert reply.status_code == 200 and reply.json()["outcome"] == "applied", reply.text


# -- secrets, callbacks, metrics --------------------------------------------------------------------


async def test_a_502_never_repeats_a_secret(tmp_path: Path) -> None:
    fake = px.FakePixazo()
    fake.refusal = (401, {"message": f"key {px.API_KEY} refused; token {API_TOKEN} and {WEBHOOK_TOKEN} seen"})
    async with (
        fake.serve(),
        serve_receiver(tmp_path, pixazo_api_key=px.API_KEY, pixazo_base_url=fake.base_url) as server,
    ):
        async with server.api() as api:
            reply = await api.post("/v1/generations", json=GENERATE)
    assert reply.status_code == 502, reply.text
    message = reply.json()["message"]
    assert message == "key *** refused; token *** and *** seen"


async def test_a_callback_answer_is_kept_short_in_the_delivery_record(tmp_path: Path) -> None:
    secretish = b"<html>internal admin panel " + b"x" * 100_000 + b"</html>"
    async with (
        callback_server(default=Reply(status=500, body=secretish)) as endpoint,
        serve_receiver(tmp_path) as server,
    ):
        async with server.api() as api, server.client() as client:
            job = (
                await api.post(
                    "/v1/jobs", json={"provider": "pixazo", "provider_job_id": "grok_3", "callback_url": endpoint.url()}
                )
            ).json()
            await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", json=px.completed("grok_3"))

            async def attempts() -> list[dict[str, Any]]:
                return list((await api.get(f"/v1/jobs/{job['id']}/deliveries")).json()["deliveries"])

            await eventually(lambda: len(endpoint.requests) >= 2, 10, "two attempts")
            await eventually(attempts, 10, "a recorded attempt")
            for attempt in [a for a in await attempts() if a["at"] is not None]:  # not the waiting message
                assert attempt["error"] is not None and len(attempt["error"]) <= len("HTTP 500: ") + 200


async def test_concurrent_scrapes_share_one_job_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    app = create_app(make_settings(tmp_path), metrics_clock=lambda: now[0])
    async with serve_app(app) as server, server.client() as client, server.api() as api:
        store = server.runtime.store
        counted = 0
        real = store.job_counts

        async def counting() -> dict[str, int]:
            nonlocal counted
            counted += 1
            await asyncio.sleep(0.05)  # a slow GROUP BY, so that the scrapes overlap
            return dict(await real())

        monkeypatch.setattr(store, "job_counts", counting)  # counts the store's queries (and slows them)
        scrapes = await asyncio.gather(*(client.get("/metrics") for _ in range(8)))
        assert all(s.status_code == 200 for s in scrapes) and counted == 1
        await api.post("/v1/jobs", json={"provider": "pixazo", "provider_job_id": "grok_4"})
        assert 'receiver_jobs{status="pending"} 0.0' in (await client.get("/metrics")).text  # cached
        assert counted == 1
        now[0] += 5.1
        assert 'receiver_jobs{status="pending"} 1.0' in (await client.get("/metrics")).text
        assert counted == 2
