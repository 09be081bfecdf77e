"""The jobs API end to end on a real server: patch, cancel, job timeout, redeliver (one job, to a URL,
many), Idempotency-Key, results before the submit's answer, the unreachable public URL, shutdown of a
held long-poll."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.app import create_app
from receiver.tuning import DeliveryLimits
from tests.fakes import runware as rw
from tests.fakes.callback import HANG, callback_server
from tests.fakes.harness import hook_url, serve_receiver, wait_job
from tests.support import API_TOKEN, ReceiverProcess, RunningServer, eventually, make_settings, process_env, serve_app

DEAD = "http://127.0.0.1:9/results"  # nothing listens there


async def register(api: httpx.AsyncClient, pid: str, **fields: Any) -> dict[str, Any]:
    reply = await api.post("/v1/jobs", json={"provider": "pixazo", "provider_job_id": pid, **fields})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def complete(server: RunningServer, pid: str) -> None:
    async with server.client() as client:
        reply = await client.post(
            hook_url(server, "pixazo"),
            json={"request_id": pid, "status": "COMPLETED", "output": {"media_url": [f"https://cdn.test/{pid}.png"]}},
        )
    assert reply.status_code == 200, reply.text


def field_named(reply: httpx.Response, name: str) -> None:
    assert reply.status_code == 422, reply.text
    assert name in [f["field"] for f in reply.json()["fields"]], reply.text


# -- PATCH /v1/jobs/{id} ------------------------------------------------------------------------------


async def test_patch_changes_where_messages_go_and_what_they_carry(tmp_path: Path) -> None:
    async with (
        callback_server() as downstream,
        serve_app(create_app(make_settings(tmp_path, retry_schedule=(2.0,) * 5))) as server,
        server.api() as api,
    ):
        job = await register(api, "p1", callback_url=DEAD, metadata={"v": 1})
        patched = await api.patch(f"/v1/jobs/{job['id']}", json={"metadata": {"v": 2}})
        assert patched.status_code == 200 and patched.json()["metadata"] == {"v": 2}
        assert patched.json()["callback_url"] == DEAD
        await complete(server, "p1")
        # Its first attempt fails (nothing listens); the retry, seconds later, goes where the job now points.
        await eventually(lambda: _attempts(api, job["id"]), timeout=10, what="a first attempt")
        moved = await api.patch(f"/v1/jobs/{job['id']}", json={"callback_url": downstream.url("/new")})
        assert moved.status_code == 200 and moved.json()["callback_url"] == downstream.url("/new")
        await eventually(lambda: downstream.requests, timeout=10, what="the re-pointed message")
        (received,) = downstream.requests
        assert received.path == "/new" and b'"metadata":{"v":2}' in received.body
        deliveries = (await api.get(f"/v1/jobs/{job['id']}/deliveries")).json()["deliveries"]
        assert {d["message_id"] for d in deliveries} == {received.webhook_id}  # the same message, moved

        assert (await api.patch("/v1/jobs/job_nope", json={"metadata": {}})).status_code == 404


async def test_after_a_patch_every_message_not_yet_sent_goes_to_the_new_url(tmp_path: Path, store_url: str) -> None:
    """40 results claimed by the worker, two in flight to a slow old endpoint and the rest queued behind them;
    the PATCH is acknowledged: the queued ones go to the new URL only, and the two in flight, answered
    by the old endpoint afterwards, are logged there and then sent to the new URL too."""
    limits = DeliveryLimits(per_host_concurrency=2)
    async with (
        callback_server(HANG, HANG) as old,
        callback_server() as new,
        serve_app(
            create_app(
                make_settings(tmp_path, database_url=store_url, retry_schedule=(3600.0,) * 3, callback_timeout_s=60),
                delivery_limits=limits,
            )
        ) as server,
        server.api() as api,
    ):
        jobs = [await register(api, f"race-{i}", callback_url=old.url("/old")) for i in range(40)]
        for i in range(40):
            await complete(server, f"race-{i}")
        await eventually(lambda: len(old.requests) == 2, what="two attempts in flight to the old URL")
        await asyncio.sleep(0.5)  # the worker has claimed the rest (each claim follows a wake-up at once)
        for job in jobs:
            reply = await api.patch(f"/v1/jobs/{job['id']}", json={"callback_url": new.url("/new")})
            assert reply.status_code == 200
        old.release()  # the two in flight are answered (503) after the PATCH
        await eventually(lambda: len({r.webhook_id for r in new.requests}) == 40, what="every result at the new URL")
        assert len(old.requests) == 2  # nothing not yet sent at the PATCH went to the old URL

        async def all_delivered() -> bool:
            listed = (await api.get("/v1/jobs", params={"delivery_status": "delivered", "limit": 100})).json()
            return len(listed["jobs"]) == 40

        await eventually(all_delivered, what="every job delivered")
        logged = [d for job in jobs for d in (await api.get(f"/v1/jobs/{job['id']}/deliveries")).json()["deliveries"]]
        assert (
            sorted((d["url"], d["status_code"]) for d in logged if d["url"] == old.url("/old"))
            == [(old.url("/old"), 503)] * 2
        )  # logged where they went, with what it answered
        assert [d for d in logged if d["url"] == new.url("/new")] and all(
            d["status_code"] == 200 for d in logged if d["url"] == new.url("/new")
        )


async def test_redeliver_retries_the_waiting_message_and_a_patch_sends_it_now(tmp_path: Path) -> None:
    async with (
        callback_server() as downstream,
        serve_app(create_app(make_settings(tmp_path, retry_schedule=(3600.0,) * 5))) as server,
        server.api() as api,
    ):
        job = await register(api, "w1", callback_url=DEAD)
        await complete(server, "w1")
        await eventually(lambda: _attempts(api, job["id"]), timeout=10, what="a first attempt")
        (attempt, waiting) = (await api.get(f"/v1/jobs/{job['id']}/deliveries")).json()["deliveries"]
        assert attempt["status_code"] is None and attempt["error"] and "next_attempt_at" not in attempt
        assert waiting["message_id"] == attempt["message_id"] and waiting["attempt"] == 2
        assert (waiting["status_code"], waiting["error"], waiting["at"]) == (None, None, None)
        assert waiting["next_attempt_at"] > attempt["at"]  # an hour away

        again = await api.post(f"/v1/jobs/{job['id']}/redeliver")
        assert again.status_code == 202
        assert again.json()["message_id"] == attempt["message_id"] and again.json()["retried"] is True

        async def second_attempt() -> bool:
            entries = (await api.get(f"/v1/jobs/{job['id']}/deliveries")).json()["deliveries"]
            return len([d for d in entries if d["at"] is not None]) == 2

        await eventually(second_attempt, timeout=10, what="the waiting message's second attempt, made now")
        moved = await api.patch(f"/v1/jobs/{job['id']}", json={"callback_url": downstream.url("/new")})
        assert moved.status_code == 200
        await eventually(
            lambda: downstream.requests, timeout=10, what="the waiting message sent at once to the new URL"
        )
        assert [r.webhook_id for r in downstream.requests] == [attempt["message_id"]]  # one message throughout
        done = await eventually(lambda: _delivered(api, job["id"]), timeout=10, what="delivered")
        assert [d["url"] for d in done] == [DEAD, DEAD, downstream.url("/new")]
        fresh = await api.post(f"/v1/jobs/{job['id']}/redeliver")  # nothing waits now: a new message
        assert fresh.status_code == 202 and fresh.json()["retried"] is False
        assert fresh.json()["message_id"] != attempt["message_id"]


async def _delivered(api: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = (await api.get(f"/v1/jobs/{job_id}/deliveries")).json()["deliveries"]
    return entries if entries and entries[-1]["status_code"] == 200 else []


async def _attempts(api: httpx.AsyncClient, job_id: str) -> bool:
    return bool((await api.get(f"/v1/jobs/{job_id}/deliveries")).json()["deliveries"])


# -- cancel ---------------------------------------------------------------------------------------------


async def test_cancel_calls_back_and_a_late_result_changes_nothing(tmp_path: Path) -> None:
    async with (
        callback_server() as downstream,
        serve_app(create_app(make_settings(tmp_path))) as server,
        server.api() as api,
    ):
        job = await register(api, "c1", callback_url=downstream.url())
        cancelled = await api.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        await eventually(lambda: downstream.requests, what="the cancellation callback")
        assert b'"type":"job.cancelled"' in downstream.requests[0].body
        events = await _replay(server)
        assert [e for e in events if e.startswith("event:")] == ["event: job.cancelled"]

        await complete(server, "c1")
        after = (await api.get(f"/v1/jobs/{job['id']}")).json()
        assert after["status"] == "cancelled" and after["outputs"] == []
        again = await api.post(f"/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 409 and again.json()["error"] == "already_terminal"
        assert (await api.post("/v1/jobs/job_nope/cancel")).status_code == 404
        await asyncio.sleep(0.3)
        assert len(downstream.requests) == 1


async def _replay(server: RunningServer) -> list[str]:
    lines: list[str] = []
    async with server.api() as api, api.stream("GET", "/v1/events", headers={"Last-Event-ID": "0"}) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                lines.append(line)
                break
    return lines


# -- RECEIVER_JOB_TIMEOUT_S --------------------------------------------------------------------------------


async def test_pending_job_fails_after_the_timeout_and_is_called_back(tmp_path: Path) -> None:
    async with (
        callback_server() as downstream,
        serve_app(create_app(make_settings(tmp_path, job_timeout_s=0.5))) as server,
        server.api() as api,
    ):
        job = await register(api, "t1", callback_url=downstream.url())
        ended = await wait_job(server, job["id"], timeout=10)
        assert ended["status"] == "failed" and "RECEIVER_JOB_TIMEOUT_S" in ended["error"]
        await eventually(lambda: downstream.requests, what="the failure callback")
        assert b'"type":"job.failed"' in downstream.requests[0].body


# -- redeliver ----------------------------------------------------------------------------------------------


async def test_redeliver_to_another_url_and_redeliveries_by_time(tmp_path: Path) -> None:
    async with (
        callback_server() as downstream,
        serve_app(create_app(make_settings(tmp_path))) as server,
        server.api() as api,
    ):
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2))
        jobs = [await register(api, f"r{i}", callback_url=downstream.url("/own")) for i in range(3)]
        await register(api, "r-pending", callback_url=downstream.url("/own"))
        for i in range(3):
            await complete(server, f"r{i}")
        await eventually(lambda: len(downstream.requests) == 3, what="the first callbacks")

        there = await api.post(f"/v1/jobs/{jobs[0]['id']}/redeliver", json={"url": downstream.url("/elsewhere")})
        assert there.status_code == 202 and there.json()["url"] == downstream.url("/elsewhere")
        await eventually(lambda: [r for r in downstream.requests if r.path == "/elsewhere"], what="the redelivery")
        plain = await api.post(f"/v1/jobs/{jobs[1]['id']}/redeliver")
        assert plain.status_code == 202 and plain.json()["url"] == downstream.url("/own")
        await eventually(lambda: len(downstream.requests) == 5, what="the plain redelivery")

        many = await api.post("/v1/redeliveries", json={"since": since, "provider": "pixazo"})
        assert many.status_code == 202 and many.json() == {"count": 3}
        await eventually(lambda: len(downstream.requests) == 8, what="the redeliveries")
        ids = [r.webhook_id for r in downstream.requests]
        assert len(set(ids)) == 8  # each a new message
        future = await api.post("/v1/redeliveries", json={"since": "2999-01-01T00:00:00Z"})
        assert future.json() == {"count": 0}
        before = await api.post("/v1/redeliveries", json={"since": since, "until": since})
        assert before.json() == {"count": 0}


# -- Idempotency-Key and results before the submit's answer (Runware) -----------------------------------------


async def test_idempotency_key_answers_the_same_jobs_without_submitting_again(tmp_path: Path) -> None:
    fake = rw.FakeRunware()
    async with (
        fake.serve("/v1"),
        serve_receiver(tmp_path, runware_api_key=rw.API_KEY, runware_base_url=fake.base_url) as server,
        server.api() as api,
    ):
        body = {"provider": "runware", "prompt": "a red fox"}
        fake.delay_s = 0.5  # both requests arrive while the first submit is under way
        first, second = await asyncio.gather(
            *(api.post("/v1/generations", json=body, headers={"Idempotency-Key": "run-1"}) for _ in range(2))
        )
        assert first.status_code == second.status_code == 202, (first.text, second.text)
        assert first.json()["jobs"][0]["id"] == second.json()["jobs"][0]["id"]
        assert len(fake.tasks_submitted()) == 1
        fake.delay_s = 0
        third = await api.post("/v1/generations", json=body, headers={"Idempotency-Key": "run-1"})
        assert third.json()["jobs"][0]["id"] == first.json()["jobs"][0]["id"] and len(fake.tasks_submitted()) == 1
        other = await api.post("/v1/generations", json=body, headers={"Idempotency-Key": "run-2"})
        assert other.status_code == 202 and len(fake.tasks_submitted()) == 2
        field_named(
            await api.post("/v1/generations", json={**body, "prompt": "changed"}, headers={"Idempotency-Key": "run-1"}),
            "Idempotency-Key",
        )
        field_named(
            await api.post("/v1/generations", json=body, headers={"Idempotency-Key": "k" * 256}), "Idempotency-Key"
        )
        # A refusal keeps no claim: the same key submits again once the provider accepts.
        fake.refusal = (400, rw.error("x", "Insufficient credits"))
        refused = await api.post("/v1/generations", json=body, headers={"Idempotency-Key": "run-3"})
        assert refused.status_code == 502
        fake.refusal = None
        retried = await api.post("/v1/generations", json=body, headers={"Idempotency-Key": "run-3"})
        assert retried.status_code == 202 and len(fake.tasks_submitted()) == 4


async def test_runware_images_before_the_submit_answer_count_for_the_job(tmp_path: Path) -> None:
    fake = rw.FakeRunware()
    async with (
        fake.serve("/v1"),
        serve_receiver(tmp_path, runware_api_key=rw.API_KEY, runware_base_url=fake.base_url) as server,
        server.api() as api,
    ):
        fake.delay_s = 1.0
        submit = asyncio.create_task(
            api.post(
                "/v1/generations", json={"provider": "runware", "prompt": "two foxes", "params": {"numberResults": 2}}
            )
        )
        await fake.wait_requests("/v1", 1, method="POST")
        task_uuid = fake.requests_to("/v1")[0].json[0]["taskUUID"]
        async with server.client() as client:  # the first image, before Runware answered the submit
            early = await client.post(hook_url(server, "runware"), json={"data": [rw.image(task_uuid, 1)]})
        assert early.status_code == 200
        reply = await submit
        assert reply.status_code == 202, reply.text
        (job,) = reply.json()["jobs"]
        assert job["provider_job_id"] == task_uuid and early.json()["job_ids"] == [job["id"]]
        now = (await api.get(f"/v1/jobs/{job['id']}")).json()
        assert now["status"] == "pending" and len(now["outputs"]) == 1  # one of two: not done yet
        async with server.client() as client:
            await client.post(hook_url(server, "runware"), json={"data": [rw.image(task_uuid, 2)]})
        finished = await wait_job(server, job["id"])
        assert finished["status"] == "succeeded" and len(finished["outputs"]) == 2


async def test_runware_refusal_leaves_no_job(tmp_path: Path) -> None:
    fake = rw.FakeRunware()
    async with (
        fake.serve("/v1"),
        serve_receiver(tmp_path, runware_api_key=rw.API_KEY, runware_base_url=fake.base_url) as server,
        server.api() as api,
    ):
        fake.refusal = (400, rw.error("x", "Insufficient credits"))
        reply = await api.post("/v1/generations", json={"provider": "runware", "prompt": "a fox"})
        assert reply.status_code == 502 and reply.json()["error"] == "provider_refused"
        assert (await api.get("/v1/jobs")).json()["jobs"] == []


# -- RECEIVER_PUBLIC_URL unset on 0.0.0.0 -----------------------------------------------------------------


async def test_all_interfaces_without_public_url_warns_and_refuses_generations(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="receiver.app")
    settings = make_settings(tmp_path, host="0.0.0.0", runware_api_key=rw.API_KEY, tunnel_discovery=False)
    async with serve_app(create_app(settings)) as server, server.api() as api:
        assert any("RECEIVER_PUBLIC_URL" in r.getMessage() for r in caplog.records)
        reply = await api.post("/v1/generations", json={"provider": "runware", "prompt": "a fox"})
        assert reply.status_code == 422 and reply.json()["setting"] == "RECEIVER_PUBLIC_URL"
        assert "RECEIVER_PUBLIC_URL" in reply.json()["message"]


# -- shutdown answers held long-polls -------------------------------------------------------------------------


async def test_held_long_poll_is_answered_at_shutdown(tmp_path: Path) -> None:
    proc = ReceiverProcess(process_env(tmp_path))
    await asyncio.to_thread(proc.start)
    try:
        async with httpx.AsyncClient(
            base_url=proc.base_url, timeout=30, headers={"Authorization": f"Bearer {API_TOKEN}"}
        ) as api:
            job = await register(api, "w1")
            held = asyncio.create_task(api.get(f"/v1/jobs/{job['id']}", params={"wait": 60}))
            await asyncio.sleep(2.0)  # the request is held by now
            assert not held.done()
            started = time.monotonic()
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)
            reply = await held
            assert reply.status_code == 200 and reply.json()["status"] == "pending"
            assert time.monotonic() - started < 30  # well before the 60 s wait: shutdown answered it
        assert await asyncio.to_thread(proc.proc.wait, 15) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    finally:
        proc.kill()


# -- already in place, checked end to end: filters, unknown parameters, receipts by job ----------------------


async def test_job_filters_unknown_parameters_and_receipts_by_job(tmp_path: Path) -> None:
    async with (
        callback_server() as downstream,
        serve_app(create_app(make_settings(tmp_path))) as server,
        server.api() as api,
    ):
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
        called = await register(api, "q1", callback_url=downstream.url())
        quiet = await register(api, "q2")
        await complete(server, "q1")
        await eventually(lambda: downstream.requests, what="the callback")
        await eventually(lambda: _status_is(api, called["id"], "delivered"), what="delivered")

        async def ids(**params: str) -> list[str]:
            reply = await api.get("/v1/jobs", params=params)
            assert reply.status_code == 200, reply.text
            return [j["id"] for j in reply.json()["jobs"]]

        assert await ids(delivery_status="delivered") == [called["id"]]
        assert await ids(delivery_status="none") == [quiet["id"]]
        assert await ids(provider_job_id="q2") == [quiet["id"]]
        assert await ids(since=since) == [quiet["id"], called["id"]]
        assert await ids(until=since) == []

        receipts = (await api.get("/v1/receipts", params={"job_id": called["id"]})).json()["receipts"]
        assert [r["job_ids"] for r in receipts] == [[called["id"]]]
        assert (await api.get("/v1/receipts", params={"job_id": quiet["id"]})).json()["receipts"] == []


async def _status_is(api: httpx.AsyncClient, job_id: str, delivery_status: str) -> bool:
    return bool((await api.get(f"/v1/jobs/{job_id}")).json()["delivery_status"] == delivery_status)


# -- requests refused with a 422 naming the field --------------------------------------------------------------

SINCE = "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "field"),
    [
        pytest.param(
            "PATCH",
            "/v1/jobs/{job}",
            {"callback_url": "ftp://x.test/"},
            None,
            "callback_url",
            id="patch-callback-url-not-http",
        ),
        pytest.param("PATCH", "/v1/jobs/{job}", {"metadata": [1]}, None, "metadata", id="patch-metadata-not-object"),
        pytest.param("PATCH", "/v1/jobs/{job}", {"status": "succeeded"}, None, "status", id="patch-status"),
        pytest.param("POST", "/v1/jobs/{job}/redeliver", {"url": "file:///etc"}, None, "url", id="redeliver-to-a-file"),
        pytest.param(
            "POST", "/v1/redeliveries", {"since": "yesterday"}, None, "since", id="redeliveries-since-not-a-time"
        ),
        pytest.param(
            "POST",
            "/v1/redeliveries",
            {"since": SINCE, "until": "x"},
            None,
            "until",
            id="redeliveries-until-not-a-time",
        ),
        pytest.param("POST", "/v1/redeliveries", {}, None, "since", id="redeliveries-without-since"),
        pytest.param(
            "POST",
            "/v1/redeliveries",
            {"since": SINCE, "delivery_status": "lost"},
            None,
            "delivery_status",
            id="redeliveries-unknown-delivery-status",
        ),
        pytest.param("GET", "/v1/jobs", None, {"since": "soon"}, "since", id="jobs-since-not-a-time"),
        pytest.param("GET", "/v1/jobs", None, {"stauts": "pending"}, "stauts", id="jobs-misspelt-filter"),
        pytest.param("GET", "/v1/receipts", None, {"jobid": "{job}"}, "jobid", id="receipts-misspelt-filter"),
    ],
)
async def test_bad_requests_are_422_naming_the_field(
    server: RunningServer,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    params: dict[str, str] | None,
    field: str,
) -> None:
    async with server.api() as api:
        job = await register(api, "v1")
        await complete(server, "v1")  # a finished job: a redelivery's 422 is not a 409 for want of a result
        query = {k: v.format(job=job["id"]) for k, v in (params or {}).items()}
        field_named(await api.request(method, path.format(job=job["id"]), json=body, params=query), field)
