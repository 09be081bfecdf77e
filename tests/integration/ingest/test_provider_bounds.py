"""Calls to providers are bounded: a whole-call deadline (connect to last byte) and a size cap on answers.
One slow provider never holds up the polls of other jobs or providers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.ingest.provider_calls import MAX_ANSWER_BYTES
from tests.fakes import pixazo as px
from tests.fakes import runware as rw
from tests.fakes.harness import serve_receiver, wait_job
from tests.fakes.hostile import HostileProvider, MiB, huge, trickle
from tests.fakes.oxen import API_KEY as OXEN_KEY
from tests.fakes.oxen import FAST_TUNING, FakeOxen
from tests.support import API_TOKEN, ReceiverProcess, RunningServer, eventually, process_env

GENERATE = {"provider": "pixazo", "prompt": "a red fox"}


async def register(server: RunningServer, provider: str, provider_job_id: str) -> dict[str, Any]:
    async with server.api() as api:
        reply = await api.post("/v1/jobs", json={"provider": provider, "provider_job_id": provider_job_id})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def receipts(server: RunningServer, provider: str) -> list[dict[str, Any]]:
    async with server.api() as api:
        return list((await api.get("/v1/receipts", params={"provider": provider})).json()["receipts"])


async def test_a_submit_to_a_trickling_provider_is_a_502_at_its_deadline(tmp_path: Path) -> None:
    hostile = HostileProvider(default=trickle(every_s=0.2))
    async with (
        hostile.serve(),
        serve_receiver(
            tmp_path, pixazo_api_key=px.API_KEY, pixazo_base_url=hostile.base_url, provider_timeout_s=1
        ) as server,
    ):
        async with server.api() as api:
            reply = await asyncio.wait_for(api.post("/v1/generations", json=GENERATE, timeout=30), 30)
            assert reply.status_code == 502, reply.text
            assert reply.json()["error"] == "provider_refused" and "within 1 s" in reply.json()["message"]
            assert (await api.get("/v1/jobs")).json()["jobs"] == []


async def test_a_trickling_poll_holds_up_no_other_job_or_provider(tmp_path: Path) -> None:
    hostile = HostileProvider(default=trickle(every_s=0.2))  # Pixazo's status endpoint never finishes
    runware = rw.FakeRunware()
    async with (
        hostile.serve(),
        runware.serve("/v1"),
        serve_receiver(
            tmp_path,
            pixazo_api_key=px.API_KEY,
            pixazo_base_url=hostile.base_url,
            runware_api_key=rw.API_KEY,
            runware_base_url=runware.base_url,
            reconcile_after_s=0.2,
            provider_timeout_s=600,  # only independence can finish the Runware job in time
        ) as server,
    ):
        for n in range(6):  # more stuck polls than the reconciler runs at once
            await register(server, "pixazo", f"grok_{n}")
        await eventually(lambda: len(hostile.requests_to("/v2/requests/status/")) >= 1, 10, "a Pixazo poll")
        task = "0f7fb6a4-2a7c-4b8e-9d59-8f1d7c1f1c2e"
        runware.tasks[task] = {"taskUUID": task}
        runware.responses[task] = [rw.image(task)]
        job = await register(server, "runware", task)
        assert (await wait_job(server, job["id"], timeout=10))["status"] == "succeeded"


async def test_the_oxen_catch_up_is_not_held_by_a_trickling_poll(tmp_path: Path, fake_oxen: FakeOxen) -> None:
    stuck, other = fake_oxen.submit(), fake_oxen.submit()
    fake_oxen.trickle_polls.add(stuck)
    async with serve_receiver(
        tmp_path, stream_tuning=FAST_TUNING, oxen_api_key=OXEN_KEY, oxen_base_url=fake_oxen.base_url
    ) as server:
        await register(server, "oxen", stuck)
        job = await register(server, "oxen", other)
        await fake_oxen.wait_connections(1)
        # The stream may have connected (and caught up) before the jobs were registered: reconnect once,
        # so a catch-up round surely sees both.
        fake_oxen.drop()
        await fake_oxen.wait_connections(2)
        await eventually(lambda: fake_oxen.requests_to(f"/api/ai/queue/{stuck}"), 10, "the stuck poll")
        fake_oxen.complete(other, emit=False)  # lost by Oxen: only a later catch-up round can see it
        fake_oxen.drop()
        await fake_oxen.wait_connections(3)
        assert (await wait_job(server, job["id"], timeout=15))["status"] == "succeeded"


async def test_a_trickling_lumenfall_call_fails_the_job_at_its_deadline(tmp_path: Path) -> None:
    hostile = HostileProvider(default=trickle(every_s=0.2))
    async with (
        hostile.serve("/openai/v1"),
        serve_receiver(
            tmp_path, lumenfall_api_key="lf-key-1234", lumenfall_base_url=hostile.base_url, lumenfall_timeout_s=1
        ) as server,
    ):
        async with server.api() as api:
            reply = await api.post("/v1/generations", json={"provider": "lumenfall", "prompt": "a red fox"})
        assert reply.status_code == 202, reply.text
        job = await wait_job(server, reply.json()["jobs"][0]["id"], timeout=15)
        assert job["status"] == "failed" and "within 1 s" in job["error"]


async def test_an_oversized_poll_answer_is_a_failed_poll_and_nothing_is_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = HostileProvider(default=huge(64 * MiB))
    caplog.set_level(logging.INFO, "receiver")
    async with (
        hostile.serve(),
        serve_receiver(
            tmp_path, pixazo_api_key=px.API_KEY, pixazo_base_url=hostile.base_url, reconcile_after_s=0.2
        ) as server,
    ):
        await register(server, "pixazo", "grok_1")
        await eventually(lambda: "exceeds" in caplog.text, 10, "the refused poll logged")
        assert await receipts(server, "pixazo") == []
        assert f"more than {MAX_ANSWER_BYTES} bytes" in caplog.text


async def test_a_300_mib_answer_is_refused_without_taking_the_memory(tmp_path: Path) -> None:
    hostile = HostileProvider(default=huge(300 * MiB))
    async with hostile.serve():
        env = process_env(
            tmp_path,
            RECEIVER_PIXAZO_API_KEY=px.API_KEY,
            RECEIVER_PIXAZO_BASE_URL=hostile.base_url,
            RECEIVER_PROVIDER_TIMEOUT_S="60",
        )
        proc = ReceiverProcess(env).start()
        try:
            before = proc.memory_kib()["VmHWM"]
            async with httpx.AsyncClient(
                base_url=proc.base_url, timeout=60, headers={"Authorization": f"Bearer {API_TOKEN}"}
            ) as api:
                reply = await api.post("/v1/generations", json=GENERATE)
            assert reply.status_code == 502 and "exceeds" in reply.json()["message"], reply.text
            grown_mib = (proc.memory_kib()["VmHWM"] - before) / 1024
            assert grown_mib < 100, f"peak RSS grew by {grown_mib:.0f} MiB"
        finally:
            proc.kill()
