"""The reconciler: a job whose webhook (or stream event) never came is completed by polling the provider,
with backoff while it is still running, never overriding a job that ended meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from receiver.ingest.reconciler import next_poll_delay, poll_interval
from tests.fakes import apiframe as af
from tests.fakes import pixazo as px
from tests.fakes import runware as rw
from tests.fakes.harness import serve_receiver, wait_job
from tests.fakes.oxen import API_KEY as OXEN_KEY
from tests.fakes.oxen import FakeOxen
from tests.support import UNMIRRORED, RunningServer, eventually, make_settings, serve_app

FAST = {"reconcile_after_s": 0.2}


async def submit(server: RunningServer, provider: str, **extra: Any) -> dict[str, Any]:
    async with server.api() as api:
        reply = await api.post("/v1/generations", json={"provider": provider, "prompt": "a red fox", **extra})
    assert reply.status_code == 202, reply.text
    job: dict[str, Any] = reply.json()["jobs"][0]
    return job


async def receipts(server: RunningServer, provider: str) -> list[dict[str, Any]]:
    async with server.api() as api:
        return (await api.get("/v1/receipts", params={"provider": provider})).json()["receipts"]


async def metrics(server: RunningServer) -> str:
    async with server.client() as client:
        return (await client.get("/metrics")).text


async def test_pixazo_lost_webhook_completed_by_polling_with_backoff(tmp_path: Path) -> None:
    fake = px.FakePixazo()
    polls: list[str] = []

    async def on_poll(request_id: str) -> None:  # running twice, then done
        polls.append(request_id)
        fake.statuses[request_id]["status"] = "PROCESSING"
        if len(polls) == 3:
            fake.statuses[request_id] = px.completed(request_id)

    fake.on_poll = on_poll
    async with (
        fake.serve(),
        serve_receiver(tmp_path, pixazo_api_key=px.API_KEY, pixazo_base_url=fake.base_url, **FAST) as server,
    ):
        job = await submit(server, "pixazo")
        finished = await wait_job(server, job["id"])
        assert finished["status"] == "succeeded"
        assert finished["outputs"][0]["url"] == px.completed(job["provider_job_id"])["output"]["media_url"][0]
        assert polls == [job["provider_job_id"]] * 3
        (status_get, *_) = fake.requests_to("/v2/requests/status/", "GET")
        assert status_get.headers["ocp-apim-subscription-key"] == px.API_KEY
        # Only the terminal answer is kept; "still processing" answers are not receipts.
        (receipt,) = await receipts(server, "pixazo")
        assert (receipt["source"], receipt["outcome"]) == ("poll", "applied")
        text = await metrics(server)
        assert 'receiver_reconcile_polls_total{provider="pixazo",result="pending"} 2.0' in text
        assert 'receiver_reconcile_polls_total{provider="pixazo",result="terminal"} 1.0' in text
        assert (await server.runtime.store.get_job(finished["id"])).poll_count == 2  # rescheduled after each "running"


async def test_runware_lost_webhooks_completed_by_get_response(tmp_path: Path) -> None:
    fake = rw.FakeRunware()
    async with (
        fake.serve("/v1"),
        serve_receiver(tmp_path, runware_api_key=rw.API_KEY, runware_base_url=fake.base_url, **FAST) as server,
    ):
        job = await submit(server, "runware", params={"numberResults": 2})
        task_uuid = job["provider_job_id"]
        await eventually(lambda: fake.polls(), what="a getResponse poll")  # answered "processing"
        fake.responses[task_uuid] = [rw.image(task_uuid, 1), rw.image(task_uuid, 2)]
        finished = await wait_job(server, job["id"])
        assert finished["status"] == "succeeded" and len(finished["outputs"]) == 2
        assert fake.polls()[0] == {"taskType": "getResponse", "taskUUID": task_uuid}
        assert all(r.headers["authorization"] == f"Bearer {rw.API_KEY}" for r in fake.requests)


async def test_apiframe_lost_webhooks_completed_and_failed_by_polling(tmp_path: Path) -> None:
    fake = af.FakeApiframe()
    async with (
        fake.serve(),
        serve_receiver(tmp_path, apiframe_api_key=af.API_KEY, apiframe_base_url=fake.base_url, **FAST) as server,
    ):
        good, bad = await submit(server, "apiframe"), await submit(server, "apiframe")
        fake.finish(good["provider_job_id"])
        fake.finish(bad["provider_job_id"], error="Provider returned an error: content moderated")
        good, bad = await wait_job(server, good["id"]), await wait_job(server, bad["id"])
        assert good["status"] == "succeeded"
        assert good["outputs"] == [
            {
                "url": f"https://cdn.apiframe.ai/results/{good['provider_job_id']}.png",
                "media_type": "image/png",
                **UNMIRRORED,
            }
        ]
        assert (bad["status"], bad["error"]) == ("failed", "Provider returned an error: content moderated")
        polls = fake.requests_to("/v2/jobs/", "GET")
        assert {r.path for r in polls} == {f"/v2/jobs/{good['provider_job_id']}", f"/v2/jobs/{bad['provider_job_id']}"}
        assert all(r.headers["x-api-key"] == af.API_KEY for r in polls)


async def test_oxen_lost_stream_event_completed_by_polling(tmp_path: Path) -> None:
    fake = FakeOxen()
    async with serve_app(fake.app) as oxen_server:
        fake.base_url = oxen_server.base_url
        async with serve_receiver(tmp_path, oxen_api_key=OXEN_KEY, oxen_base_url=fake.base_url, **FAST) as server:
            await fake.wait_connections(1)  # so the consumer's after-connect catch-up is over before we submit
            job = await submit(server, "oxen")
            fake.cancel(job["provider_job_id"])  # Oxen sends no event for a cancellation: only a poll sees it
            finished = await wait_job(server, job["id"])
            assert finished["status"] == "cancelled"
            assert fake.requests_to(f"/api/ai/queue/{job['provider_job_id']}")
            (receipt,) = await receipts(server, "oxen")
            assert receipt["source"] == "poll"
            assert 'receiver_reconcile_polls_total{provider="oxen",result="terminal"} 1.0' in await metrics(server)


async def test_polling_never_overrides_a_job_finished_by_webhook_meanwhile(tmp_path: Path) -> None:
    """The webhook lands between the reconciler picking the job and the poll's answer, which disagrees."""
    fake = px.FakePixazo()
    server_box: list[RunningServer] = []
    webhook_url = ""

    async def on_poll(request_id: str) -> None:
        async with server_box[0].client() as client:
            reply = await client.post(webhook_url, json=px.completed(request_id, ["https://cdn.test/by-webhook.jpeg"]))
        assert reply.status_code == 200
        fake.statuses[request_id] = px.failed(request_id, "a late, contradicting poll answer", status="FAILED")

    fake.on_poll = on_poll
    async with (
        fake.serve(),
        serve_receiver(tmp_path, pixazo_api_key=px.API_KEY, pixazo_base_url=fake.base_url, **FAST) as server,
    ):
        server_box.append(server)
        job = await submit(server, "pixazo")
        (sent,) = fake.requests_to("/grok-imagine-pro")
        webhook_url = sent.headers["x-webhook-url"]
        finished = await wait_job(server, job["id"])
        await eventually(lambda: len(fake.requests_to("/v2/requests/status/", "GET")) == 1, what="the poll")

        async def poll_recorded() -> bool:
            return any(r["source"] == "poll" for r in await receipts(server, "pixazo"))

        await eventually(poll_recorded, what="the poll's receipt")
        async with server.api() as api:
            after = (await api.get(f"/v1/jobs/{job['id']}")).json()
        assert after == finished
        assert (after["status"], after["outputs"][0]["url"]) == ("succeeded", "https://cdn.test/by-webhook.jpeg")
        assert after["error"] is None
        outcomes = {r["source"]: r["outcome"] for r in await receipts(server, "pixazo")}
        assert outcomes == {"webhook": "applied", "poll": "duplicate"}


async def test_providers_without_key_are_not_polled(tmp_path: Path) -> None:
    pixazo, apiframe = px.FakePixazo(), af.FakeApiframe()
    async with (
        pixazo.serve(),
        apiframe.serve(),
        serve_receiver(
            tmp_path,
            pixazo_base_url=pixazo.base_url,
            apiframe_api_key=af.API_KEY,
            apiframe_base_url=apiframe.base_url,
            **FAST,
        ) as server,
    ):
        async with server.api() as api:  # registered by hand: there is no key to submit with
            reply = await api.post("/v1/jobs", json={"provider": "pixazo", "provider_job_id": "px-unpolled"})
        assert reply.status_code == 201
        await submit(server, "apiframe")  # due after the pixazo job
        await apiframe.wait_requests("/v2/jobs/", 2, "GET")  # polled twice: the pixazo job was long due
        assert pixazo.requests == []


def test_poll_timing(tmp_path: Path) -> None:
    prod = make_settings(tmp_path)
    assert poll_interval(prod) == 1.0
    assert poll_interval(make_settings(tmp_path, reconcile_after_s=0.2)) == pytest.approx(0.05)
    no_jitter = lambda: 0.0  # noqa: E731
    delays = [next_poll_delay(prod, n, rand=no_jitter) for n in range(10)]
    assert delays[:3] == [60.0, 120.0, 240.0] and delays[-1] == 3600.0
    assert next_poll_delay(make_settings(tmp_path, reconcile_after_s=0.2), 0, rand=no_jitter) == pytest.approx(0.2)
    assert 30.0 <= next_poll_delay(prod, 0, rand=lambda: 1.0) < 60.0  # jitter only shortens
