"""The Oxen consumer end to end: the real receiver app on uvicorn against a fake Oxen on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.app import create_app, open_runtime
from receiver.errors import StoreError
from receiver.ingest.oxen_stream import Reconnects, StreamFailure, run_oxen_consumer
from receiver.ingest.polling import Polled, poll_job
from receiver.models import JobStatus, Outcome
from receiver.runtime import Runtime
from receiver.tuning import StreamTuning
from tests.fakes.oxen import API_KEY, COMPLETED, FAST_TUNING, FakeOxen
from tests.support import UNMIRRORED, RunningServer, eventually, free_port, make_settings, serve_app


@contextlib.asynccontextmanager
async def running_receiver(
    tmp_path: Path, base_url: str, *, stream_tuning: StreamTuning = FAST_TUNING, **overrides: Any
) -> AsyncIterator[RunningServer]:
    overrides.setdefault("oxen_api_key", API_KEY)
    settings = make_settings(tmp_path, oxen_base_url=base_url, **overrides)
    async with serve_app(create_app(settings, stream_tuning=stream_tuning)) as server:
        yield server


@pytest.fixture
async def receiver(tmp_path: Path, fake_oxen: FakeOxen) -> AsyncIterator[RunningServer]:
    async with running_receiver(tmp_path, fake_oxen.base_url) as server:
        yield server


async def readyz(server: RunningServer) -> dict[str, Any]:
    async with server.client() as client:
        response = await client.get("/readyz")
        assert response.status_code == 200
        return response.json()


async def wait_state(server: RunningServer, state: str, timeout: float = 5.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = await readyz(server)
        return body if body["oxen_stream"] == state else None

    return await eventually(check, timeout, f"oxen_stream == {state!r}")


async def register(api: httpx.AsyncClient, generation_id: str, provider: str = "oxen") -> str:
    response = await api.post("/v1/jobs", json={"provider": provider, "provider_job_id": generation_id})
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])


async def job_when(api: httpx.AsyncClient, job_id: str, status: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job = (await api.get(f"/v1/jobs/{job_id}", params={"wait": 1})).json()
        return job if job["status"] == status else None

    return await eventually(check, 5.0, f"job {job_id} {status}")


async def receipts(api: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await api.get("/v1/receipts", params={"provider": "oxen", **params})
    assert response.status_code == 200
    return list(response.json()["receipts"])


async def metric(server: RunningServer, name: str) -> float:
    async with server.client() as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not found")


def polls_of(fake: FakeOxen, generation_id: str) -> list[Any]:
    return fake.requests_to(f"/api/ai/queue/{generation_id}")


# -- the stream ----------------------------------------------------------------------------------


async def test_completions_on_the_stream_finish_jobs(receiver: RunningServer, fake_oxen: FakeOxen) -> None:
    fake = fake_oxen
    ok_id, bad_id = fake.submit(), fake.submit()
    fake.refuse_streams = 503  # register while disconnected, so the catch-up poll runs before any completion
    fake.drop()
    await wait_state(receiver, "connecting")
    async with receiver.api() as api:
        ok_job, bad_job = await register(api, ok_id), await register(api, bad_id)
        fake.refuse_streams = None
        await wait_state(receiver, "connected")
        await eventually(lambda: _true(polls_of(fake, ok_id) and polls_of(fake, bad_id)), what="catch-up polls")
        connections = fake.connections

        stream_request = fake.requests_to("/api/events")[-1]
        assert stream_request.headers["authorization"] == f"Bearer {API_KEY}"
        assert stream_request.headers["accept"] == "text/event-stream"

        # Noise the consumer must ignore: comments, other event types, data without an event name.
        fake.send_raw(": keep-alive\n\n: another comment\n\n")
        fake.emit("media_generation_progress", {"generation_id": ok_id, "status": "processing"})
        fake.emit("credits_updated", {"balance": 12})
        fake.send_raw(f'data: {{"generation_id": "{ok_id}", "status": "failed"}}\n\n')

        url = f"https://cdn.oxen.test/out/{ok_id}.png?X-Amz-Expires=600"
        fake.complete(ok_id, url=url)
        fake.complete(bad_id, error="Insufficient credits")

        succeeded = await job_when(api, ok_job, "succeeded")
        assert succeeded["outputs"] == [{"url": url, "media_type": "image/png", **UNMIRRORED}]
        assert succeeded["error"] is None and succeeded["completed_at"]
        failed = await job_when(api, bad_job, "failed")
        assert failed["error"] == "Insufficient credits" and failed["outputs"] == []

        kept = await receipts(api)
        assert [(r["source"], r["outcome"]) for r in kept] == [("stream", "applied")] * 2
        assert {tuple(r["provider_job_ids"]) for r in kept} == {(ok_id,), (bad_id,)}
        assert fake.connections == connections  # the ignored events cost no reconnect
    assert await metric(receiver, "receiver_oxen_stream_connected") == 1.0


async def test_completion_before_registration_is_claimed(receiver: RunningServer, fake_oxen: FakeOxen) -> None:
    generation_id = fake_oxen.submit()
    await wait_state(receiver, "connected")
    fake_oxen.complete(generation_id)
    async with receiver.api() as api:
        await eventually(lambda: receipts(api, outcome="applied"), what="stream receipt")
        response = await api.post("/v1/jobs", json={"provider": "oxen", "provider_job_id": generation_id})
        assert response.status_code == 200  # the job already existed, made by the completion
        assert response.json()["status"] == "succeeded"


async def test_garbage_is_kept_as_invalid_and_the_consumer_goes_on(
    receiver: RunningServer, fake_oxen: FakeOxen
) -> None:
    fake = fake_oxen
    generation_id = fake.submit()
    await wait_state(receiver, "connected")
    async with receiver.api() as api:
        job_id = await register(api, generation_id)
        fake.emit(COMPLETED, "this is {not json")
        fake.emit(COMPLETED, {"status": "succeeded", "url": "https://cdn.oxen.test/x.png"})  # no generation_id
        fake.emit(COMPLETED, {"generation_id": generation_id, "status": "succeeded"})  # no url
        fake.emit(COMPLETED, "")
        fake.send_raw("\x00\x01 not an sse line at all\nretry: soon\nid\n\n")
        fake.complete(generation_id)

        job = await job_when(api, job_id, "succeeded")
        assert job["outputs"][0]["url"].startswith(f"https://cdn.oxen.test/generations/{generation_id}.png")
        invalid = await receipts(api, outcome="invalid")
        assert [r["body"] for r in reversed(invalid)] == [
            "this is {not json",
            '{"status": "succeeded", "url": "https://cdn.oxen.test/x.png"}',
            f'{{"generation_id": "{generation_id}", "status": "succeeded"}}',
            "",
        ]
        assert all(r["source"] == "stream" and r["error"] for r in invalid)
        assert "not JSON" in invalid[-1]["error"] and "empty" in invalid[0]["error"]
    assert fake.connections == 1
    assert (await readyz(receiver))["oxen_stream"] == "connected"


async def test_a_failed_store_write_reconnects_and_polling_recovers(
    receiver: RunningServer, fake_oxen: FakeOxen, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = receiver.runtime.store
    real_apply = store.apply
    failures: list[str] = []

    async def apply_failing_once(receipt: Any, completions: Any) -> Any:
        if receipt.source == "stream" and not failures:
            failures.append(receipt.body.decode())
            raise StoreError("disk I/O error")
        return await real_apply(receipt, completions)

    monkeypatch.setattr(store, "apply", apply_failing_once)
    generation_id = fake_oxen.submit()
    await wait_state(receiver, "connected")
    async with receiver.api() as api:
        job_id = await register(api, generation_id)
        fake_oxen.complete(generation_id)
        await job_when(api, job_id, "succeeded")
        assert failures and generation_id in failures[0]
        assert [r["source"] for r in await receipts(api)] == ["poll"]
    assert fake_oxen.connections == 2


@pytest.mark.parametrize("abort", [True, False], ids=["cut-mid-stream", "closed-cleanly"])
async def test_nothing_is_lost_across_a_drop(receiver: RunningServer, fake_oxen: FakeOxen, abort: bool) -> None:
    fake = fake_oxen
    await wait_state(receiver, "connected")
    ok_id, bad_id, later_id = fake.submit(), fake.submit(), fake.submit()
    async with receiver.api() as api:
        jobs = {g: await register(api, g) for g in (ok_id, bad_id, later_id)}
        fake.refuse_streams = 503
        assert fake.drop(abort=abort) == 1
        ready = await wait_state(receiver, "connecting")
        assert ready["oxen_stream_error"]
        await eventually(lambda: _true(len(fake.requests_to("/api/events")) >= 2), what="a refused reconnect")

        # Fired while the receiver is disconnected: Oxen keeps nothing, so the stream never carries them.
        fake.complete(ok_id)
        fake.complete(bad_id, error="content policy")
        assert len(fake.lost) == 2

        fake.refuse_streams = None
        await wait_state(receiver, "connected")
        assert (await job_when(api, jobs[ok_id], "succeeded"))["outputs"]
        assert (await job_when(api, jobs[bad_id], "failed"))["error"] == "content policy"
        polled = [r for r in await receipts(api) if r["source"] == "poll"]
        assert sorted(r["provider_job_ids"][0] for r in polled) == sorted([ok_id, bad_id])
        assert all(r["outcome"] == "applied" for r in polled)
        for request in polls_of(fake, ok_id):
            assert request.headers["authorization"] == f"Bearer {API_KEY}"

        # And the new connection carries live completions again.
        fake.complete(later_id)
        await job_when(api, jobs[later_id], "succeeded")
        assert (await receipts(api))[0]["source"] == "stream"
    assert fake.connections == 2
    assert await metric(receiver, "receiver_oxen_stream_reconnects_total") >= 3  # first, refused, accepted


async def test_a_stall_is_detected_and_reconnected(
    receiver: RunningServer, fake_oxen: FakeOxen, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="receiver")
    fake = fake_oxen
    await wait_state(receiver, "connected")
    await asyncio.sleep(FAST_TUNING.stall_timeout_s * 1.6)  # keep-alives keep an idle stream alive
    assert fake.connections == 1

    started = time.monotonic()
    assert fake.stall() == 1
    await fake.wait_connections(2, timeout=10)
    assert time.monotonic() - started >= FAST_TUNING.stall_timeout_s * 0.9  # not before the silence lasted
    # Ended by the stall detector, at the tuned timeout (not by some other deadline that happens to be near).
    assert f"no data from Oxen for {FAST_TUNING.stall_timeout_s:g} s: stalled connection" in caplog.text

    generation_id = fake.submit()
    async with receiver.api() as api:
        job_id = await register(api, generation_id)
        await wait_state(receiver, "connected")
        fake.complete(generation_id)
        await job_when(api, job_id, "succeeded")


@pytest.mark.parametrize("refusal", ["401", "403", "wrong-key"])
async def test_unauthorized_is_reported_and_recovers(
    tmp_path: Path, fake_oxen: FakeOxen, caplog: pytest.LogCaptureFixture, refusal: str
) -> None:
    caplog.set_level(logging.INFO, logger="receiver")
    fake = fake_oxen
    if refusal == "wrong-key":
        fake.api_key = "a-different-key"
    else:
        fake.refuse_auth = int(refusal)
    async with running_receiver(tmp_path, fake.base_url) as server:
        ready = await wait_state(server, "unauthorized")
        assert ("403" if refusal == "403" else "401") in ready["oxen_stream_error"]
        assert await metric(server, "receiver_oxen_stream_connected") == 0.0
        await eventually(lambda: _true(len(fake.requests_to("/api/events")) >= 2), what="a retry")
        assert (await readyz(server))["oxen_stream"] == "unauthorized"  # not "connecting" between retries

        fake.refuse_auth, fake.api_key = None, API_KEY
        ready = await wait_state(server, "connected")
        assert "oxen_stream_error" not in ready
    errors = [r for r in caplog.records if r.name == "receiver.oxen" and r.levelno >= logging.ERROR]
    assert errors and "RECEIVER_OXEN_API_KEY" in errors[0].getMessage()
    assert API_KEY not in caplog.text


async def test_oxen_unreachable_is_reported(tmp_path: Path) -> None:
    async with running_receiver(tmp_path, f"http://127.0.0.1:{free_port()}") as server:
        ready = await eventually(
            lambda: _if(readyz(server), lambda b: b.get("oxen_stream_error")), what="a connection error"
        )
        assert ready["oxen_stream"] == "connecting"
        assert "connect" in ready["oxen_stream_error"].lower()


# -- polling -------------------------------------------------------------------------------------


async def test_catch_up_polls_every_pending_oxen_job_after_connecting(tmp_path: Path, fake_oxen: FakeOxen) -> None:
    fake = fake_oxen
    fake.refuse_streams = 503
    done_id, queued_id, cancelled_id = fake.submit(), fake.submit(), fake.submit()
    unknown_id = "0000nobody0000"
    async with running_receiver(tmp_path, fake.base_url) as server, server.api() as api:
        await wait_state(server, "connecting")
        jobs = {g: await register(api, g) for g in (done_id, queued_id, cancelled_id, unknown_id)}
        other = await register(api, done_id, provider="pixazo")
        fake.complete(done_id)
        fake.cancel(cancelled_id)
        assert not polls_of(fake, done_id)

        fake.refuse_streams = None
        await job_when(api, jobs[done_id], "succeeded")
        cancelled = await job_when(api, jobs[cancelled_id], "cancelled")
        assert cancelled["outputs"] == [] and cancelled["completed_at"]
        await eventually(lambda: _true(polls_of(fake, unknown_id) and polls_of(fake, queued_id)), what="all polled")
        assert len(polls_of(fake, done_id)) == 1  # one round per connect, not one per job
        for generation_id in (queued_id, unknown_id):
            assert (await api.get(f"/v1/jobs/{jobs[generation_id]}")).json()["status"] == "pending"
        assert (await api.get(f"/v1/jobs/{other}")).json()["status"] == "pending"  # pixazo's, not Oxen's
        kept = await receipts(api)
        assert sorted((r["source"], r["provider_job_ids"][0]) for r in kept) == sorted(
            [("poll", done_id), ("poll", cancelled_id)]
        )


async def test_cancelled_generation_is_seen_by_polling(receiver: RunningServer, fake_oxen: FakeOxen) -> None:
    fake = fake_oxen
    generation_id = fake.submit()
    await wait_state(receiver, "connected")
    async with receiver.api() as api:
        job_id = await register(api, generation_id)
        fake.cancel(generation_id)  # no event: the stream never says so
        assert not fake.lost
        fake.drop()
        job = await job_when(api, job_id, "cancelled")
        assert job["error"] is None
        [receipt] = await receipts(api)
        assert (receipt["source"], receipt["outcome"]) == ("poll", "applied")
        assert json.loads(receipt["body"])["status"] == "cancelled"


async def test_cancelled_generation_is_seen_while_the_stream_stays_up(tmp_path: Path, fake_oxen: FakeOxen) -> None:
    """No reconnect here: the reconciler polls pending Oxen jobs older than RECEIVER_RECONCILE_AFTER_S."""
    fake = fake_oxen
    generation_id = fake.submit()
    async with running_receiver(tmp_path, fake.base_url, reconcile_after_s=0.2) as server, server.api() as api:
        await wait_state(server, "connected")
        job_id = await register(api, generation_id)
        fake.cancel(generation_id)
        await job_when(api, job_id, "cancelled")
        assert fake.connections == 1
        [receipt] = await receipts(api)
        assert (receipt["source"], receipt["outcome"]) == ("poll", "applied")


@pytest.fixture
async def runtime(tmp_path: Path, fake_oxen: FakeOxen) -> AsyncIterator[Runtime]:
    rt = await open_runtime(
        make_settings(tmp_path, oxen_api_key=API_KEY, oxen_base_url=fake_oxen.base_url), stream_tuning=FAST_TUNING
    )
    try:
        yield rt
    finally:
        await rt.close()


async def oxen_job(rt: Runtime, generation_id: str) -> Any:
    job, _ = await rt.store.register_job(
        provider="oxen", provider_job_id=generation_id, callback_url=None, metadata={}, expected_outputs=None
    )
    return job


async def test_poll_oxen_job_answers(runtime: Runtime, fake_oxen: FakeOxen) -> None:
    """`poll_job`, the reconciler's and the catch-up's one way to ask Oxen: every kind of answer."""
    fake = fake_oxen
    jobs = [await oxen_job(runtime, fake.submit()) for _ in range(4)]
    done, failed, cancelled, queued = jobs
    fake.complete(done.provider_job_id, url="https://cdn.oxen.test/a.webp")
    fake.complete(failed.provider_job_id, error="NSFW content detected")
    fake.cancel(cancelled.provider_job_id)
    fake.generations[queued.provider_job_id]["status"] = "processing"

    polled = await poll_job(runtime, done, timeout=5)
    result = polled.applied
    assert polled.result == "terminal" and polled.finished
    assert result is not None and result.outcome is Outcome.APPLIED and result.terminal_job_ids == [done.id]
    job = await runtime.store.get_job(done.id)
    assert job is not None and job.status is JobStatus.SUCCEEDED
    assert [o.to_json() for o in job.outputs] == [
        {"url": "https://cdn.oxen.test/a.webp", "media_type": "image/webp", **UNMIRRORED}
    ]
    again = await poll_job(runtime, done, timeout=5)
    assert again.result == "terminal" and not again.finished
    assert again.applied is not None and again.applied.outcome is Outcome.DUPLICATE

    assert (await poll_job(runtime, failed, timeout=5)).result == "terminal"
    assert (await runtime.store.get_job(failed.id)).error == "NSFW content detected"  # type: ignore[union-attr]
    assert (await poll_job(runtime, cancelled, timeout=5)).result == "terminal"
    assert (await runtime.store.get_job(cancelled.id)).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert await poll_job(runtime, queued, timeout=5) == Polled("pending")
    assert (await runtime.store.get_job(queued.id)).status is JobStatus.PENDING  # type: ignore[union-attr]

    stored = await runtime.store.list_receipts(provider="oxen", outcome=None, limit=50, cursor=None)
    assert [r.source for r in stored.items] == ["poll"] * 4  # done, done again, failed, cancelled: none for queued
    request = polls_of(fake, done.provider_job_id)[0]
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_poll_oxen_job_failures(runtime: Runtime, fake_oxen: FakeOxen) -> None:
    fake = fake_oxen
    unknown = await oxen_job(runtime, "not-at-oxen")
    assert await poll_job(runtime, unknown, timeout=5) == Polled("error")  # 404, as for every provider: left pending
    assert (await runtime.store.get_job(unknown.id)).status is JobStatus.PENDING  # type: ignore[union-attr]

    job = await oxen_job(runtime, fake.submit())
    fake.queue_status = 500
    assert await poll_job(runtime, job, timeout=5) == Polled("error")
    fake.queue_status = None

    fake.refuse_auth = 401
    assert await poll_job(runtime, job, timeout=5) == Polled("error")
    fake.refuse_auth = None
    assert (await runtime.store.list_receipts(provider="oxen", outcome=None, limit=5, cursor=None)).items == []

    # Answers that cannot be used are kept as invalid receipts, as the reconciler keeps them for every provider.
    fake.generations[job.provider_job_id]["status"] = "exploded"
    assert (await poll_job(runtime, job, timeout=5)).result == "invalid"
    fake.generations[job.provider_job_id].update(
        status="succeeded", result_url="https://x.test/1.png", generation_id="someone-else"
    )
    assert (await poll_job(runtime, job, timeout=5)).result == "invalid"
    kept = (await runtime.store.list_receipts(provider="oxen", outcome=None, limit=5, cursor=None)).items
    assert [(r.source, r.outcome) for r in kept] == [("poll", Outcome.INVALID)] * 2
    assert "someone-else" in (kept[0].error or "") and "exploded" in (kept[1].error or "")
    assert (await runtime.store.get_job(job.id)).status is JobStatus.PENDING  # type: ignore[union-attr]

    fake.queue_delay_s = 5.0
    assert await poll_job(runtime, job, timeout=0.1) == Polled("error")  # past its deadline


# -- shutdown ------------------------------------------------------------------------------------


# Each moment holds the consumer in a wait of 30 s or more; shutdown must cut it short, not sit it out.
SHUTDOWN_WAITS = {
    "connected": FAST_TUNING,  # the stream stays open until the receiver hangs up
    "mid-backoff": StreamTuning(backoff_base_s=60, backoff_cap_s=60),  # 30-60 s before the next attempt
    "stalled": StreamTuning(),  # the real 37.5 s stall timeout
    "catch-up-poll": replace(FAST_TUNING, poll_timeout_s=60),  # a poll Oxen answers after 60 s
}


@pytest.mark.parametrize("moment", list(SHUTDOWN_WAITS))
async def test_shutdown_cuts_every_wait_short(tmp_path: Path, fake_oxen: FakeOxen, moment: str) -> None:
    fake = fake_oxen
    if moment == "mid-backoff":
        fake.refuse_streams = 503
    if moment == "stalled":
        fake.stall_new_streams = True
    if moment == "catch-up-poll":
        fake.refuse_streams = 503
    context = running_receiver(tmp_path, fake.base_url, stream_tuning=SHUTDOWN_WAITS[moment])
    server = await context.__aenter__()
    try:
        if moment == "connected":
            await wait_state(server, "connected")
            fake.complete(fake.submit())  # mid-stream traffic
        elif moment == "mid-backoff":
            await eventually(lambda: _true(fake.requests_to("/api/events")), what="a refused attempt")
            await asyncio.sleep(0.1)
        elif moment == "stalled":
            await wait_state(server, "connected")
            assert fake.connections == 1 and fake.live_streams == 0
        else:
            generation_id = fake.submit()
            async with server.api() as api:
                await register(api, generation_id)
            fake.queue_delay_s = 60.0
            fake.refuse_streams = None
            await eventually(lambda: _true(polls_of(fake, generation_id)), what="the catch-up poll in flight")
    except BaseException:
        await context.__aexit__(None, None, None)
        raise
    started = time.monotonic()
    await context.__aexit__(None, None, None)
    elapsed = time.monotonic() - started
    # Under a second on an idle machine; the bound is far below the 30 s waits, so only sitting one out fails.
    assert elapsed < 5, f"shutdown took {elapsed:.2f} s: it sat out the consumer's wait"


# -- backoff bookkeeping -------------------------------------------------------------------------


def test_reconnect_delays_grow_cap_and_reset() -> None:
    tuning = StreamTuning()
    plain = StreamFailure("gone")
    no_jitter = Reconnects(tuning, rand=lambda: 0.0)
    assert [no_jitter.next_delay(plain) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    no_jitter.connected_for(tuning.healthy_after_s - 1)  # a short connection is no sign of health
    assert no_jitter.next_delay(plain) == 30
    no_jitter.connected_for(tuning.healthy_after_s)
    assert no_jitter.next_delay(plain) == 1

    full_jitter = Reconnects(tuning, rand=lambda: 1.0)
    assert [full_jitter.next_delay(plain) for _ in range(3)] == [0.5, 1, 2]

    refused = StreamFailure("HTTP 401", unauthorized=True)
    slow = Reconnects(tuning, rand=lambda: 0.0)
    assert [slow.next_delay(refused) for _ in range(4)] == [15, 30, 60, 60]

    told = Reconnects(tuning, rand=lambda: 0.0)
    assert told.next_delay(StreamFailure("503", retry_after=12)) == 12
    assert told.next_delay(StreamFailure("503", retry_after=3600)) == tuning.backoff_cap_s


async def test_by_default_a_stream_is_read_with_two_and_a_half_keep_alives_of_patience(
    tmp_path: Path, fake_oxen: FakeOxen
) -> None:
    """With the production timings (no tuning given), the stream's read timeout (the stall detector) is
    37.5 s: 2.5 times Oxen's 15 s keep-alive."""
    rt = await open_runtime(make_settings(tmp_path, oxen_api_key=API_KEY, oxen_base_url=fake_oxen.base_url))
    sent: list[httpx.Request] = []

    async def note(request: httpx.Request) -> None:
        sent.append(request)

    rt.http.event_hooks["request"].append(note)
    consumer = asyncio.create_task(run_oxen_consumer(rt))
    try:
        await fake_oxen.wait_connections(1)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await rt.close()
    (stream,) = [r for r in sent if r.url.path == "/api/events"]
    assert stream.extensions["timeout"]["read"] == 37.5
    assert stream.extensions["timeout"]["connect"] == 10.0


# -- the fake itself -----------------------------------------------------------------------------


async def test_fake_oxen_queue_api(fake_oxen: FakeOxen) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=fake_oxen.base_url) as client:
        fake_oxen.generations_per_request = 2
        answer = await client.post(
            "/api/ai/queue", json={"model": "xai-grok-imagine-image", "prompt": "owl"}, headers=auth
        )
        assert answer.status_code == 200
        generations = answer.json()["generations"]
        assert [g["status"] for g in generations] == ["queued", "queued"]
        polled = (await client.get(f"/api/ai/queue/{generations[0]['generation_id']}", headers=auth)).json()
        assert polled["model_name"] == "xai-grok-imagine-image" and polled["result_url"] is None
        missing = await client.get("/api/ai/queue/nope", headers=auth)
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "resource_not_found"
        assert (await client.post("/api/ai/queue", json={"prompt": "owl"}, headers=auth)).status_code == 400
        assert (await client.get("/api/ai/queue/nope")).status_code == 401


# -- helpers -------------------------------------------------------------------------------------


async def _true(value: Any) -> Any:
    return value


async def _if(body: Awaitable[dict[str, Any]], test: Callable[[dict[str, Any]], Any]) -> dict[str, Any] | None:
    value = await body
    return value if test(value) else None
