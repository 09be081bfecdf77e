"""Downstream delivery end to end: signed, retried, durable, replayable callbacks.

The receiver runs for real (uvicorn on loopback, a real SQLite file, or `receiver serve` in a
subprocess); only the downstream endpoints are fakes (`tests/fakes/callback.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
from httpx_sse import aconnect_sse

from receiver.app import create_app
from receiver.delivery.worker import decide, destination
from receiver.errors import StoreUnavailable
from receiver.store.base import Message
from receiver.tuning import DeliveryLimits
from receiver.util.backoff import parse_retry_after
from tests.fakes.callback import HANG, Reply, black_hole, callback_server
from tests.support import (
    SIGNING_SECRET,
    UNMIRRORED,
    WEBHOOK_TOKEN,
    ReceiverProcess,
    RunningServer,
    api_client,
    eventually,
    free_port,
    make_settings,
    process_env,
    register_job,
    serve_app,
)

# -- helpers ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def receiver(tmp_path: Path, **overrides: Any) -> AsyncIterator[RunningServer]:
    async with serve_app(create_app(make_settings(tmp_path, **overrides))) as running:
        yield running


async def complete(client: httpx.AsyncClient, request_id: str, *, failed: bool = False) -> list[str]:
    """A Pixazo webhook finishing `request_id`; returns the job ids it touched."""
    body: dict[str, Any] = {"request_id": request_id, "status": "FAILED" if failed else "COMPLETED"}
    if failed:
        body["error"] = "content policy"
    else:
        body["output"] = {"media_url": [f"https://cdn.example/{request_id}.jpeg"], "media_type": "image/jpeg"}
    response = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", json=body)
    assert response.status_code == 200, response.text
    return list(response.json()["job_ids"])


async def finished_job(client: httpx.AsyncClient, callback_url: str | None, *, failed: bool = False) -> str:
    request_id = f"req_{uuid.uuid4().hex[:12]}"
    job = await register_job(client, request_id, callback_url=callback_url)
    assert await complete(client, request_id, failed=failed) == [job["id"]]
    return str(job["id"])


async def job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def delivery_status_is(client: httpx.AsyncClient, job_id: str, status: str) -> bool:
    return bool((await job(client, job_id))["delivery_status"] == status)


async def deliveries(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/jobs/{job_id}/deliveries")
    assert response.status_code == 200, response.text
    return list(response.json()["deliveries"])


def verify(received: Any) -> dict[str, Any]:
    """The Standard Webhooks check a downstream receiver makes."""
    return dict(standardwebhooks.Webhook(SIGNING_SECRET).verify(received.body, received.headers))


# -- the retry policy (pure) --------------------------------------------------------------------

SCHEDULE = (0.05, 0.1, 0.2)
MIDDLE = lambda: 0.5  # noqa: E731  (pins the jitter at zero)


@pytest.mark.parametrize(
    ("status", "attempts", "expected"),
    [
        (200, 1, ("delivered", None)),
        (204, 4, ("delivered", None)),
        (410, 1, ("failed", None)),
        (500, 1, ("retry", 0.05)),
        (None, 2, ("retry", 0.1)),
        (301, 3, ("retry", 0.2)),  # redirects are not followed: just another non-2xx answer
        (500, 4, ("failed", None)),  # 3 values = 4 attempts
        (None, 4, ("failed", None)),
    ],
)
def test_decide(status: int | None, attempts: int, expected: tuple[str, float | None]) -> None:
    decision = decide(status_code=status, attempts_made=attempts, schedule=SCHEDULE, rand=MIDDLE)
    assert (decision.outcome, decision.delay) == expected


def test_decide_jitter_stays_within_ten_percent() -> None:
    low = decide(status_code=500, attempts_made=1, schedule=(10.0,), rand=lambda: 0.0).delay
    high = decide(status_code=500, attempts_made=1, schedule=(10.0,), rand=lambda: 0.999).delay
    assert low == pytest.approx(9.0) and high == pytest.approx(11.0, abs=0.01)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(30.0, 30.0), (1000.0, 60.0), (0.0, 1.0), (None, 1.0)],  # longer wins, capped at the largest step
)
def test_decide_honours_retry_after_capped(retry_after: float | None, expected: float) -> None:
    decision = decide(status_code=503, attempts_made=1, schedule=(1.0, 60.0), retry_after=retry_after, rand=MIDDLE)
    assert (decision.outcome, decision.delay) == ("retry", expected)


def test_decide_permanent_error_and_410_ignore_retry_after() -> None:
    assert decide(status_code=None, attempts_made=1, schedule=SCHEDULE, permanent=True).outcome == "failed"
    assert decide(status_code=410, attempts_made=1, schedule=SCHEDULE, retry_after=1).outcome == "failed"
    assert decide(status_code=503, attempts_made=1, schedule=(), retry_after=1).outcome == "failed"


def test_parse_retry_after() -> None:
    now = time.time()
    in_30s = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after(" 7 ", now=now) == 7
    assert parse_retry_after(in_30s, now=now) == pytest.approx(30, abs=1.5)
    assert parse_retry_after(email.utils.formatdate(now - 300, usegmt=True), now=now) == 0
    assert parse_retry_after("-5", now=now) == 0
    for junk in (None, "", "soon", "nan", "Mon, 99 Foo 2020"):
        assert parse_retry_after(junk, now=now) is None


def test_destination_keys_by_origin_and_hides_the_rest() -> None:
    assert destination("https://Hooks.Example.com/a/SECRET?token=x") == "https://hooks.example.com:443"
    assert destination("http://user:pw@127.0.0.1:9000/x") == "http://127.0.0.1:9000"
    assert destination("http://host:99999/") == "invalid-url"


# -- signing, retries, Retry-After, 410, exhaustion, redelivery ----------------------------------


async def test_callback_is_signed_and_verifies_with_standardwebhooks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with callback_server(Reply(500)) as fake, receiver(tmp_path) as server, api_client(server.base_url) as client:
        job_id = await finished_job(client, fake.url("/hook/path-secret?token=downstream-secret"))
        await eventually(lambda: len(fake.requests) == 2, what="the callback and its retry")
        received = fake.requests[-1]

        payload = verify(received)
        assert payload["type"] == "job.succeeded"
        assert payload["data"]["id"] == job_id
        assert payload["data"]["status"] == "succeeded"
        assert payload["data"]["outputs"] == [
            {"url": payload["data"]["outputs"][0]["url"], "media_type": "image/jpeg", **UNMIRRORED}
        ]
        assert received.headers["content-type"] == "application/json"
        assert received.webhook_id.startswith("msg_")
        assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 5
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook("whsec_" + "A" * 43 + "=").verify(received.body, received.headers)
        tampered = received.body.replace(b"succeeded", b"failed", 1)
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(SIGNING_SECRET).verify(tampered, received.headers)

        await eventually(functools.partial(delivery_status_is, client, job_id, "delivered"), what="delivered")
        retried, attempt = await deliveries(client, job_id)
        assert (retried["attempt"], retried["status_code"]) == (1, 500)
        assert attempt["attempt"] == 2 and attempt["status_code"] == 200 and attempt["error"] is None
        assert attempt["url"] == fake.url("/hook/path-secret?token=downstream-secret")
        metrics = (await client.get("/metrics")).text
        assert 'receiver_deliveries_total{outcome="delivered"} 1.0' in metrics
        assert 'receiver_deliveries_total{outcome="retry"} 1.0' in metrics

    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("receiver"))
    assert received.webhook_id in logged  # the attempts were logged…
    for secret in ("downstream-secret", "path-secret", SIGNING_SECRET, SIGNING_SECRET.removeprefix("whsec_")):
        assert secret not in logged  # …without the callback URL's path and query, or the signing secret


async def test_retries_keep_the_webhook_id_and_follow_the_schedule(tmp_path: Path) -> None:
    async with (
        callback_server(Reply(500, body=b"boom"), Reply(503)) as fake,
        receiver(tmp_path) as server,
        api_client(server.base_url) as client,
    ):
        job_id = await finished_job(client, fake.url(), failed=True)
        await eventually(functools.partial(delivery_status_is, client, job_id, "delivered"), what="delivered")

        assert len(fake.requests) == 3
        assert len({r.webhook_id for r in fake.requests}) == 1
        assert all(verify(r)["type"] == "job.failed" for r in fake.requests)
        first, second, third = (r.at for r in fake.requests)
        assert second - first >= 0.05 * 0.9  # schedule step 1, minus the most jitter can take
        assert third - second >= 0.1 * 0.9
        attempts = await deliveries(client, job_id)
        assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
        assert attempts[0]["error"] == "HTTP 500: boom" and attempts[2]["error"] is None
        await asyncio.sleep(0.3)  # longer than what is left of the schedule: nothing more is sent
        assert len(fake.requests) == 3


async def test_retry_after_is_honoured_up_to_the_largest_step(tmp_path: Path) -> None:
    # Retry-After: 30 would wait 30 s; capped by the schedule's largest step (0.6 s), well above its 0.05 s.
    async with (
        callback_server(Reply(429, headers={"Retry-After": "30"})) as fake,
        receiver(tmp_path, retry_schedule=(0.05, 0.6)) as server,
        api_client(server.base_url) as client,
    ):
        job_id = await finished_job(client, fake.url())
        await eventually(functools.partial(delivery_status_is, client, job_id, "delivered"), what="delivered")
        first, second = fake.requests
        assert first.webhook_id == second.webhook_id
        assert 0.6 <= second.at - first.at < 1.5


async def test_410_stops_retrying(tmp_path: Path) -> None:
    async with callback_server(Reply(410)) as fake, receiver(tmp_path) as server, api_client(server.base_url) as client:
        job_id = await finished_job(client, fake.url())
        await eventually(lambda: delivery_status_is(client, job_id, "failed"), what="failed")
        await asyncio.sleep(0.4)  # more than the whole schedule (0.35 s)
        assert len(fake.requests) == 1
        assert [(a["attempt"], a["status_code"]) for a in await deliveries(client, job_id)] == [(1, 410)]


async def test_exhausted_delivery_fails_then_redeliver_sends_a_new_message(tmp_path: Path) -> None:
    async with (
        callback_server(default=Reply(500)) as fake,
        receiver(tmp_path) as server,
        api_client(server.base_url) as client,
    ):
        job_id = await finished_job(client, fake.url())
        await eventually(lambda: delivery_status_is(client, job_id, "failed"), what="failed")
        assert len(fake.requests) == 4  # 3 schedule values: 4 attempts
        [old_id] = {r.webhook_id for r in fake.requests}
        assert [a["attempt"] for a in await deliveries(client, job_id)] == [1, 2, 3, 4]
        await asyncio.sleep(0.2)
        assert len(fake.requests) == 4 and await delivery_status_is(client, job_id, "failed")

        fake.default = Reply(200)
        response = await client.post(f"/v1/jobs/{job_id}/redeliver")
        assert response.status_code == 202, response.text
        new_id = response.json()["message_id"]
        assert new_id != old_id
        await eventually(lambda: delivery_status_is(client, job_id, "delivered"), what="redelivered")
        assert [r.webhook_id for r in fake.requests[4:]] == [new_id]
        assert verify(fake.requests[4])["data"]["id"] == job_id
        attempts = await deliveries(client, job_id)
        assert [(a["attempt"], a["status_code"]) for a in attempts][-1] == (1, 200)
        assert len(attempts) == 5

        assert (await client.post("/v1/jobs/job_nope/redeliver")).status_code == 404
        pending = await register_job(client, "still-running", callback_url=fake.url())
        assert (await client.post(f"/v1/jobs/{pending['id']}/redeliver")).status_code == 409
        assert (
            await client.post(f"/v1/jobs/{job_id}/redeliver", headers={"Authorization": "Bearer x"})
        ).status_code == 401


async def test_timeouts_and_refused_connections_are_retried(tmp_path: Path) -> None:
    refused = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
    async with (
        callback_server(HANG) as fake,
        receiver(tmp_path, callback_timeout_s=0.3, retry_schedule=(0.05,)) as server,
        api_client(server.base_url) as client,
    ):
        dead = await finished_job(client, refused)
        slow = await finished_job(client, fake.url())
        await eventually(lambda: delivery_status_is(client, dead, "failed"), what="refused → failed")
        await eventually(lambda: delivery_status_is(client, slow, "delivered"), what="timeout → retried → delivered")

        attempts = await deliveries(client, dead)
        assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, None), (2, None)]
        assert all(a["error"].startswith("connection failed") for a in attempts)
        attempts = await deliveries(client, slow)
        assert [(a["status_code"], a["error"]) for a in attempts] == [(None, "timeout after 0.3s"), (200, None)]
        first, second = fake.requests
        assert first.webhook_id == second.webhook_id and second.at - first.at >= 0.3


async def test_redirects_are_not_followed(tmp_path: Path) -> None:
    async with (
        callback_server() as target,
        callback_server() as redirector,
        receiver(tmp_path, retry_schedule=(0.05,)) as server,
        api_client(server.base_url) as client,
    ):
        redirector.default = Reply(307, headers={"Location": target.url()})
        job_id = await finished_job(client, redirector.url())
        await eventually(lambda: delivery_status_is(client, job_id, "failed"), what="failed")
        assert len(redirector.requests) == 2 and target.requests == []
        assert [a["status_code"] for a in await deliveries(client, job_id)] == [307, 307]


# -- concurrency --------------------------------------------------------------------------------


async def test_a_hanging_endpoint_does_not_delay_another(tmp_path: Path) -> None:
    limits = DeliveryLimits()
    async with (
        callback_server(default=HANG) as slow,
        callback_server() as fast,
        receiver(tmp_path, callback_timeout_s=10) as server,
        api_client(server.base_url) as client,
    ):
        # More than the worker holds for one destination: the rest is postponed, not lost.
        stuck = [await finished_job(client, slow.url(f"/{i}")) for i in range(limits.per_host_held + 4)]
        await eventually(
            lambda: len(slow.requests) >= limits.per_host_concurrency, what="the slow endpoint's slots to fill"
        )

        started = time.monotonic()
        job_id = await finished_job(client, fast.url())
        [received] = await eventually(lambda: fast.requests, timeout=2, what="the fast callback")
        assert received.at - started < 0.5
        await eventually(functools.partial(delivery_status_is, client, job_id, "delivered"), what="delivered")

        # Bounded per destination: the others wait their turn instead of piling on.
        assert slow.max_in_flight == limits.per_host_concurrency == len(slow.requests)
        assert all([await delivery_status_is(client, j, "pending") for j in stuck])

        slow.default = Reply(200)
        slow.release()  # the hanging ones get a 503 and are retried
        for j in stuck:
            await eventually(
                functools.partial(delivery_status_is, client, j, "delivered"), what="every slow callback delivered"
            )
        assert slow.max_in_flight == limits.per_host_concurrency
        assert {r.path for r in slow.requests} == {f"/{i}" for i in range(len(stuck))}


async def test_endpoints_that_never_answer_cannot_crowd_out_a_healthy_one(tmp_path: Path) -> None:
    limits = DeliveryLimits()
    async with (
        black_hole() as hole_a,
        black_hole() as hole_b,
        callback_server() as healthy,
        receiver(tmp_path, callback_timeout_s=120) as server,
        api_client(server.base_url) as client,
    ):
        # Two destinations that accept and never answer, 150 results each, before the healthy one's.
        for hole in (hole_a, hole_b):
            for start in range(0, 150, 15):
                await asyncio.gather(*(finished_job(client, hole.url(f"/{i}")) for i in range(start, start + 15)))
        await eventually(lambda: hole_a.open and hole_b.open, timeout=10, what="both black holes to be called")
        fine = [await finished_job(client, healthy.url(f"/{i}")) for i in range(20)]

        await eventually(
            lambda: len({r.path for r in healthy.requests}) == len(fine),
            timeout=10,
            what="every healthy callback while the black holes hang",
        )
        for job_id in fine:
            await eventually(functools.partial(delivery_status_is, client, job_id, "delivered"), what="delivered")
        # The black holes still hang: nothing of theirs was answered, and they never got more than their slots.
        assert hole_a.open == hole_b.open == limits.per_host_concurrency
        assert max(hole_a.max_open, hole_b.max_open) == limits.per_host_concurrency
        stuck = (await client.get("/v1/jobs", params={"limit": "500"})).json()["jobs"]
        assert sum(j["delivery_status"] == "pending" for j in stuck) == 300


async def test_a_backlog_beyond_a_destinations_share_is_delivered_whole_within_its_limits(tmp_path: Path) -> None:
    small = DeliveryLimits(per_host_concurrency=2, per_host_held=4, max_concurrency=4, max_held=8)
    async with (
        callback_server() as fake,
        serve_app(create_app(make_settings(tmp_path), delivery_limits=small)) as server,
        api_client(server.base_url) as client,
    ):
        jobs = await asyncio.gather(*(finished_job(client, fake.url(f"/{i}")) for i in range(40)))
        await eventually(lambda: len(fake.requests) >= len(jobs), timeout=20, what="every callback")
        for job_id in jobs:
            await eventually(functools.partial(delivery_status_is, client, job_id, "delivered"), what="delivered")
        assert sorted(r.path for r in fake.requests) == sorted(f"/{i}" for i in range(40))  # each once
        assert fake.max_in_flight <= small.per_host_concurrency


async def test_a_backlog_for_one_destination_is_postponed_once_not_again_and_again(tmp_path: Path) -> None:
    """Beyond its share a destination's messages are postponed, and claimed back by their seq as it makes
    room: not claimed by time before there is room and postponed again, a write each, while it drains."""
    small = DeliveryLimits(per_host_concurrency=2, per_host_held=4, max_concurrency=4, max_held=32)
    async with (
        callback_server() as fake,
        serve_app(create_app(make_settings(tmp_path), delivery_limits=small)) as server,
        api_client(server.base_url) as client,
    ):
        store = server.runtime.store
        postponed: list[int] = []
        postpone = store.postpone_messages

        async def counted(seqs: list[int], *, until: float) -> None:
            postponed.extend(seqs)
            await postpone(seqs, until=until)

        store.postpone_messages = counted
        jobs = await asyncio.gather(*(finished_job(client, fake.url(f"/{i}")) for i in range(200)))
        await eventually(lambda: len(fake.requests) >= len(jobs), timeout=30, what="every callback")
        assert sorted(r.path for r in fake.requests) == sorted(f"/{i}" for i in range(200))  # each once
        assert postponed, "no backlog formed: nothing was tested"
        assert len(postponed) == len(set(postponed)), f"{len(postponed) - len(set(postponed))} postponed again"


async def test_postponed_messages_a_failed_claim_did_not_take_are_claimed_by_seq_later(tmp_path: Path) -> None:
    """The claim of postponed messages by their seq fails once (the store away for a moment): the worker
    keeps those messages, in order, and claims them by seq once the store answers, rather than leaving
    them to their fallback due time."""
    small = DeliveryLimits(per_host_concurrency=2, per_host_held=4, max_concurrency=4, max_held=32)
    async with (
        callback_server() as fake,
        serve_app(create_app(make_settings(tmp_path), delivery_limits=small)) as server,
        api_client(server.base_url) as client,
    ):
        store = server.runtime.store
        calls: list[list[int]] = []
        claim_listed = store.claim_listed

        async def fails_once(seqs: list[int], *, lease_s: float) -> list[Message]:
            calls.append(list(seqs))
            if len(calls) == 1:
                raise StoreUnavailable("the store is away")
            claimed: list[Message] = await claim_listed(seqs, lease_s=lease_s)
            return claimed

        store.claim_listed = fails_once
        jobs = await asyncio.gather(*(finished_job(client, fake.url(f"/{i}")) for i in range(60)))
        await eventually(lambda: len(fake.requests) >= len(jobs), timeout=60, what="every callback")
        assert sorted(r.path for r in fake.requests) == sorted(f"/{i}" for i in range(60))  # each once
    assert len(calls) >= 2, "no claim by seq after the failure: nothing was tested"
    failed, later = calls[0], [seq for call in calls[1:] for seq in call]
    assert later[: len(failed)] == failed, (failed, calls[1:])  # first again, in the same order


async def test_at_shutdown_what_the_worker_postponed_to_claim_back_is_due_at_once(tmp_path: Path) -> None:
    """Messages postponed beyond a destination's share wait for this worker to claim them back; when it
    stops, they are made due now, for another replica, not left to their far fallback time."""
    small = DeliveryLimits(per_host_concurrency=2, per_host_held=4, max_concurrency=4, max_held=32)
    async with black_hole() as hole:
        async with (
            serve_app(create_app(make_settings(tmp_path), delivery_limits=small)) as server,
            api_client(server.base_url) as client,
        ):
            for i in range(20):
                await finished_job(client, hole.url(f"/{i}"))
            store = server.runtime.store

            async def postponed() -> list[Any] | None:
                rows = await store._fetch(
                    "SELECT next_attempt_at FROM messages WHERE status = 'pending' AND lease_until IS NULL"
                )
                return [r for r in rows if r[0] > time.time() + 10] or None

            far = await eventually(postponed, what="the messages beyond the share postponed")
            assert len(far) == 20 - small.per_host_held
            stopped = time.time()
        store_path = tmp_path / "receiver.db"
        with sqlite3.connect(store_path) as db:
            due = [r[0] for r in db.execute("SELECT next_attempt_at FROM messages WHERE status = 'pending'")]
    assert len(due) == 20 and max(due) <= stopped + 1, due


def test_delivery_limits_keep_one_destination_below_half_of_the_worker() -> None:
    assert DeliveryLimits().per_host_held * 2 <= DeliveryLimits().max_held
    for bad in (
        {"per_host_held": 300},
        {"per_host_concurrency": 200},
        {"per_host_held": 4, "per_host_concurrency": 8},
        {"max_held": 0},
    ):
        with pytest.raises(ValueError):
            DeliveryLimits(**bad)


# -- registration, validation -------------------------------------------------------------------


async def test_registering_a_job_whose_result_already_arrived_delivers_at_once(tmp_path: Path) -> None:
    async with callback_server() as fake, receiver(tmp_path) as server, api_client(server.base_url) as client:
        [job_id] = await complete(client, "early-bird")
        assert (await job(client, job_id))["delivery_status"] == "none"  # nowhere to send it yet

        started = time.monotonic()
        registered = await register_job(client, "early-bird", callback_url=fake.url(), metadata={"user": 7})
        assert registered["id"] == job_id and registered["status"] == "succeeded"
        [received] = await eventually(lambda: fake.requests, timeout=2, what="the callback")
        assert received.at - started < 1.0
        payload = verify(received)
        assert payload["data"]["id"] == job_id and payload["data"]["metadata"] == {"user": 7}
        await eventually(functools.partial(delivery_status_is, client, job_id, "delivered"), what="delivered")


async def test_default_callback_url_gets_unregistered_results(tmp_path: Path) -> None:
    async with callback_server() as fake:
        async with (
            receiver(tmp_path, default_callback_url=fake.url("/default")) as server,
            api_client(server.base_url) as client,
        ):
            [job_id] = await complete(client, "nobody-registered-me")
            [received] = await eventually(lambda: fake.requests, what="the callback")
            assert received.path == "/default" and verify(received)["data"]["id"] == job_id


BAD_CALLBACK_URLS = [
    "ftp://example.com/hook",
    "javascript:alert(1)",
    "example.com/hook",
    "http://",
    "http:///path",
    "http://exa mple.com/",
    "http://host:99999/",
    "http://host:abc/",
    "http://[::1/",
    "https://x/\n",
    42,
]


async def test_callback_url_must_be_http_or_https(server: RunningServer) -> None:
    async with server.api() as client:
        for url in BAD_CALLBACK_URLS:
            body = {"provider": "pixazo", "provider_job_id": "p1", "callback_url": url}
            response = await client.post("/v1/jobs", json=body)
            assert response.status_code == 422, (url, response.text)
            assert response.json()["fields"][0]["field"] == "callback_url", url
        assert (await client.get("/v1/jobs")).json()["jobs"] == []  # nothing was registered

        for i, url in enumerate(
            ["https://hooks.example.com/a?token=x&y=1", "http://127.0.0.1:9000/cb", "HTTPS://EXAMPLE.com"]
        ):
            response = await client.post(
                "/v1/jobs", json={"provider": "pixazo", "provider_job_id": f"g{i}", "callback_url": url}
            )
            assert response.status_code == 201, response.text
            assert response.json()["callback_url"] == url


# -- GET /v1/events -----------------------------------------------------------------------------


async def read_events(
    client: httpx.AsyncClient,
    count: int,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    on_open: Callable[[], Awaitable[Any]] | None = None,
) -> list[tuple[int, str, dict[str, Any]]]:
    """The first `count` events of one /v1/events connection, as (id, event, data)."""
    events: list[tuple[int, str, dict[str, Any]]] = []
    async with asyncio.timeout(5):
        async with aconnect_sse(client, "GET", "/v1/events", params=params, headers=dict(headers or {})) as source:
            assert source.response.status_code == 200
            assert source.response.headers["content-type"].startswith("text/event-stream")
            if on_open is not None:
                await on_open()
            async for sse in source.aiter_sse():
                events.append((int(sse.id), sse.event, json.loads(sse.data)))
                if len(events) == count:
                    break
    return events


async def test_events_replay_from_last_event_id_and_go_on_live(server: RunningServer) -> None:
    async with server.api() as client:
        jobs = [
            await finished_job(client, None),
            await finished_job(client, None, failed=True),
            await finished_job(client, None),
        ]

        replay = await read_events(client, 3, headers={"Last-Event-ID": "0"})
        assert [(e[1], e[2]["id"]) for e in replay] == [
            ("job.succeeded", jobs[0]),
            ("job.failed", jobs[1]),
            ("job.succeeded", jobs[2]),
        ]
        ids = [e[0] for e in replay]
        assert ids == sorted(ids) and len(set(ids)) == 3 and ids[0] > 0
        assert replay[1][2]["status"] == "failed" and replay[1][2]["error"] == "content policy"

        # Resume after the first (header) and after the second (query): the rest comes, then live ones.
        fourth: list[str] = []

        async def finish_another() -> None:
            fourth.append(await finished_job(client, None))

        resumed = await read_events(client, 3, headers={"Last-Event-ID": str(ids[0])}, on_open=finish_another)
        assert [e[2]["id"] for e in resumed] == [jobs[1], jobs[2], fourth[0]]
        assert [e[2]["id"] for e in await read_events(client, 2, params={"last_event_id": str(ids[1])})] == [
            jobs[2],
            fourth[0],
        ]

        # Without Last-Event-ID: nothing old, only what finishes after connecting.
        fifth: list[str] = []

        async def finish_yet_another() -> None:
            fifth.append(await finished_job(client, None))

        [(seq, event, data)] = await read_events(client, 1, on_open=finish_yet_another)
        assert data["id"] == fifth[0] and event == "job.succeeded" and seq > resumed[-1][0]


async def test_events_reject_a_bad_last_event_id(server: RunningServer) -> None:
    async with server.api() as client:
        for bad in ("abc", "-1", "²", "1" * 40, "9" * 5000, "9223372036854775808"):
            response = await client.get("/v1/events", params={"last_event_id": bad})
            assert response.status_code == 422, (bad, response.text)
            assert "last_event_id" in response.json()["message"]
        response = await client.get("/v1/events", headers={"Last-Event-ID": "x1"})
        assert response.status_code == 422
    async with server.client() as anonymous:
        assert (await anonymous.get("/v1/events")).status_code == 401


async def test_events_refuse_a_last_event_id_ahead_of_the_store(server: RunningServer) -> None:
    async with server.api() as client:
        response = await client.get("/v1/events", headers={"Last-Event-ID": "1"})
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "last_event_id_ahead" and response.json()["last_event_id"] == 0

        await finished_job(client, None)
        [(newest, _, _)] = await read_events(client, 1, headers={"Last-Event-ID": "0"})
        response = await client.get("/v1/events", params={"last_event_id": str(newest + 1)})
        assert response.status_code == 409 and response.json()["last_event_id"] == newest
        # The newest id itself is fine: nothing to replay, then live.
        async with aconnect_sse(client, "GET", "/v1/events", headers={"Last-Event-ID": str(newest)}) as source:
            assert source.response.status_code == 200


# -- long-poll ----------------------------------------------------------------------------------


# The long-polls below ask for the longest wait (60 s) and must be answered within half of it: whatever the
# machine's load, only a poll that sat out its wait fails.
WAIT = {"wait": "60"}
ANSWERED_WITHIN_S = 30


async def test_long_poll_returns_on_completion(server: RunningServer) -> None:
    async with server.api() as client:
        pending = await register_job(client, "lp-1", callback_url=None)
        poll = asyncio.create_task(client.get(f"/v1/jobs/{pending['id']}", params=WAIT, timeout=90))
        await asyncio.sleep(0.2)
        assert not poll.done()
        await complete(client, "lp-1")
        response = await asyncio.wait_for(poll, ANSWERED_WITHIN_S)  # woken by the completion
        assert response.status_code == 200 and response.json()["status"] == "succeeded"

        # Already terminal: no wait at all.
        again = await asyncio.wait_for(
            client.get(f"/v1/jobs/{pending['id']}", params=WAIT, timeout=90), ANSWERED_WITHIN_S
        )
        assert again.json()["status"] == "succeeded"


async def test_long_poll_times_out_and_validates_wait(server: RunningServer) -> None:
    async with server.api() as client:
        pending = await register_job(client, "lp-2", callback_url=None)
        started = time.monotonic()
        response = await client.get(f"/v1/jobs/{pending['id']}", params={"wait": "0.3"})
        assert response.status_code == 200 and response.json()["status"] == "pending"
        assert time.monotonic() - started >= 0.3  # held for its wait (the client's 10 s timeout bounds it above)
        for bad in ("61", "-1", "soon", "nan"):
            response = await client.get(f"/v1/jobs/{pending['id']}", params={"wait": bad})
            assert response.status_code == 422 and "wait" in response.json()["message"], bad
        unknown = client.get("/v1/jobs/job_nope", params=WAIT, timeout=90)
        assert (await asyncio.wait_for(unknown, ANSWERED_WITHIN_S)).status_code == 404  # not held


# -- durability across SIGKILL ------------------------------------------------------------------


async def test_delivery_resumes_after_sigkill_and_a_delivered_message_is_not_resent(tmp_path: Path) -> None:
    # Attempt 1 gets a 500, attempt 2 hangs: the process is killed while it waits.
    async with callback_server(Reply(500), HANG) as fake:
        env = process_env(tmp_path, RECEIVER_RETRY_SCHEDULE="0.05,0.1,0.2,0.4", RECEIVER_CALLBACK_TIMEOUT_S="5")
        proc = ReceiverProcess(env, cwd=tmp_path)
        try:
            await asyncio.to_thread(proc.start)
            async with api_client(proc.base_url) as client:
                job_id = await finished_job(client, fake.url())
                await eventually(lambda: len(fake.requests) == 2 and fake.in_flight == 1, what="the hanging retry")
            await asyncio.to_thread(proc.kill)

            await asyncio.to_thread(proc.start)  # same SQLite file; the in-flight attempt is retried
            async with api_client(proc.base_url) as client:
                await eventually(
                    lambda: delivery_status_is(client, job_id, "delivered"), what="delivered after restart"
                )
                assert len(fake.requests) == 3
                [message_id] = {r.webhook_id for r in fake.requests}
                assert all(verify(r)["data"]["id"] == job_id for r in fake.requests)
                assert [(a["attempt"], a["status_code"]) for a in await deliveries(client, job_id)] == [
                    (1, 500),
                    (2, 200),
                ]
            await asyncio.to_thread(proc.kill)

            await asyncio.to_thread(proc.start)  # the 2xx-acknowledged message must not go out again
            async with api_client(proc.base_url) as client:
                other = await finished_job(client, fake.url("/other"))
                await eventually(lambda: any(r.path == "/other" for r in fake.requests), what="a new callback")
                await asyncio.sleep(0.2)
                assert len(fake.for_id(message_id)) == 3
                assert [r.path for r in fake.requests[3:]] == ["/other"]
                await eventually(lambda: delivery_status_is(client, other, "delivered"), what="delivered")
        finally:
            await asyncio.to_thread(proc.kill)
