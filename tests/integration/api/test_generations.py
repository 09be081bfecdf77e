"""`POST /v1/generations` end to end: the receiver submits to a fake provider over HTTP, the result comes back
through the provider's own path (webhook, stream, synchronous answer), and `GET /v1/jobs/{id}` shows it."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.ingest.lumenfall_calls import INTERRUPTED
from receiver.models import IDEMPOTENCY_KEY_MAX_LENGTH
from receiver.providers import PROVIDER_NAMES
from receiver.settings import webhook_url
from tests.fakes import apiframe as af
from tests.fakes import lumenfall as lf
from tests.fakes import pixazo as px
from tests.fakes import runware as rw
from tests.fakes.harness import hook_url, serve_receiver, wait_job
from tests.fakes.oxen import API_KEY as OXEN_KEY
from tests.fakes.oxen import FakeOxen
from tests.fakes.recording import FakeProvider
from tests.support import API_TOKEN, UNMIRRORED, ReceiverProcess, RunningServer, free_port, process_env, serve_app

CALLBACK = "http://127.0.0.1:9/results"  # stored on the job; nothing listens there


def is_uuid4(value: str) -> bool:
    return uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value


async def generate(server: RunningServer, body: dict[str, Any], **headers: str) -> Any:
    async with server.api() as api:
        return await api.post("/v1/generations", json=body, headers=headers)


async def get_job(server: RunningServer, job_id: str) -> dict[str, Any]:
    async with server.api() as api:
        job: dict[str, Any] = (await api.get(f"/v1/jobs/{job_id}")).json()
    return job


async def jobs_of(server: RunningServer, provider: str) -> list[dict[str, Any]]:
    async with server.api() as api:
        jobs: list[dict[str, Any]] = (await api.get("/v1/jobs", params={"provider": provider})).json()["jobs"]
    return jobs


# -- each provider, end to end ----------------------------------------------------------------------


async def test_pixazo_submit_then_webhook(tmp_path: Path) -> None:
    fake = px.FakePixazo()
    async with (
        fake.serve(),
        serve_receiver(tmp_path, pixazo_api_key=px.API_KEY, pixazo_base_url=fake.base_url) as server,
    ):
        reply = await generate(
            server,
            {
                "provider": "pixazo",
                "prompt": "a red fox",
                "params": {"num_images": 1, "aspect_ratio": "16:9"},
                "callback_url": CALLBACK,
                "metadata": {"run": 7},
            },
        )
        assert reply.status_code == 202, reply.text
        (job,) = reply.json()["jobs"]
        assert job["status"] == "pending" and job["provider"] == "pixazo"
        assert job["callback_url"] == CALLBACK and job["metadata"] == {"run": 7}

        (sent,) = fake.requests_to("/grok-imagine-pro-text-to-image-quality/")
        assert sent.path == "/grok-imagine-pro-text-to-image-quality/v1/grok-imagine-pro-text-to-image-quality-request"
        assert sent.headers["ocp-apim-subscription-key"] == px.API_KEY
        assert sent.headers["x-webhook-url"] == hook_url(server, "pixazo")
        assert sent.headers["x-webhook-url"] == webhook_url(server.runtime.settings, server.runtime.secrets, "pixazo")
        assert sent.json == {"prompt": "a red fox", "num_images": 1, "aspect_ratio": "16:9"}
        request_id = job["provider_job_id"]
        assert request_id in fake.statuses

        async with server.client() as client:  # Pixazo calls the URL it was given
            done = await client.post(sent.headers["x-webhook-url"], json=px.completed(request_id))
        assert done.status_code == 200 and done.json()["job_ids"] == [job["id"]]
        finished = await get_job(server, job["id"])
        assert finished["status"] == "succeeded"
        assert finished["outputs"] == [
            {"url": f"https://pub-test.r2.dev/v1/{request_id}/output.jpeg", "media_type": "image/jpeg", **UNMIRRORED}
        ]

        edit = await generate(
            server, {"provider": "pixazo", "prompt": "sharper", "input_image": "https://i.test/a.png"}
        )
        assert edit.status_code == 202, edit.text
        (sent,) = fake.requests_to("/grok-imagine-pro-edit-quality/")
        assert sent.path == "/grok-imagine-pro-edit-quality/v1/grok-imagine-pro-edit-quality-request"
        assert sent.json == {"prompt": "sharper", "image_urls": ["https://i.test/a.png"]}


async def test_runware_submit_then_one_webhook_per_image(tmp_path: Path) -> None:
    fake = rw.FakeRunware()
    async with (
        fake.serve("/v1"),
        serve_receiver(tmp_path, runware_api_key=rw.API_KEY, runware_base_url=fake.base_url) as server,
    ):
        reply = await generate(
            server,
            {
                "provider": "runware",
                "prompt": "a red fox",
                "model": "xai:grok-imagine@image",
                "params": {"numberResults": 2, "outputFormat": "PNG"},
            },
        )
        assert reply.status_code == 202, reply.text
        (job,) = reply.json()["jobs"]
        (sent,) = fake.requests_to("/v1")
        assert sent.headers["authorization"] == f"Bearer {rw.API_KEY}"
        (task,) = sent.json
        assert is_uuid4(task["taskUUID"]) and task["taskUUID"] == job["provider_job_id"]
        assert task == {
            "taskType": "imageInference",
            "taskUUID": task["taskUUID"],
            "model": "xai:grok-imagine@image",
            "positivePrompt": "a red fox",
            "numberResults": 2,
            "outputFormat": "PNG",
            "deliveryMethod": "async",
            "webhookURL": hook_url(server, "runware"),
        }

        async with server.client() as client:
            first = await client.post(task["webhookURL"], json={"data": [rw.image(task["taskUUID"], 1)]})
            assert first.status_code == 200
            partial = await get_job(server, job["id"])
            assert partial["status"] == "pending" and len(partial["outputs"]) == 1  # 1 of numberResults=2
            second = await client.post(task["webhookURL"], json={"data": [rw.image(task["taskUUID"], 2)]})
            assert second.status_code == 200
        finished = await get_job(server, job["id"])
        assert finished["status"] == "succeeded"
        assert [o["url"] for o in finished["outputs"]] == [rw.image(task["taskUUID"], n)["imageURL"] for n in (1, 2)]

        again = await generate(server, {"provider": "runware", "prompt": "again"})
        assert again.status_code == 202
        assert again.json()["jobs"][0]["provider_job_id"] != job["provider_job_id"]  # a fresh taskUUID each time


async def test_apiframe_submit_idempotent_then_signed_webhook(tmp_path: Path) -> None:
    fake = af.FakeApiframe()
    async with (
        fake.serve(),
        serve_receiver(tmp_path, apiframe_api_key=af.API_KEY, apiframe_base_url=fake.base_url) as server,
    ):
        reply = await generate(
            server,
            {
                "provider": "apiframe",
                "prompt": "a red fox",
                "input_image": "https://i.test/a.png",
                "params": {"grokParams": {"aspectRatio": "2:3"}},
            },
        )
        assert reply.status_code == 202, reply.text
        (job,) = reply.json()["jobs"]
        (sent,) = fake.requests_to("/v2/images/generate")
        assert sent.headers["x-api-key"] == af.API_KEY
        assert is_uuid4(sent.headers["idempotency-key"])
        assert sent.json == {
            "model": "grok-imagine-image",
            "prompt": "a red fox",
            "grokParams": {"aspectRatio": "2:3", "image": "https://i.test/a.png"},
            "webhookUrl": hook_url(server, "apiframe"),
            "webhookEvents": ["completed", "failed"],
        }
        assert job["provider_job_id"] in fake.jobs

        # A caller retrying with its own Idempotency-Key gets the same job without a second submit (the
        # receiver answers it); the key is still sent on, so Apiframe de-duplicates a retried submit too.
        body = {"provider": "apiframe", "prompt": "once"}
        first = await generate(server, body, **{"Idempotency-Key": "pipeline-run-42"})
        retry = await generate(server, body, **{"Idempotency-Key": "pipeline-run-42"})
        assert first.status_code == retry.status_code == 202
        assert first.json()["jobs"][0]["id"] == retry.json()["jobs"][0]["id"]
        assert [r.headers["idempotency-key"] for r in fake.requests_to("/v2/images/generate")[1:]] == [
            "pipeline-run-42"
        ]
        assert len(fake.jobs) == 2
        # The longest key the receiver takes is one Apiframe takes; one longer is refused before submitting.
        longest = "k" * IDEMPOTENCY_KEY_MAX_LENGTH
        assert (await generate(server, {**body, "prompt": "long"}, **{"Idempotency-Key": longest})).status_code == 202
        too_long = await generate(server, {**body, "prompt": "longer"}, **{"Idempotency-Key": longest + "k"})
        assert too_long.status_code == 422 and too_long.json()["fields"][0]["field"] == "Idempotency-Key", too_long.text
        assert len(fake.jobs) == 3

        raw, headers = af.signed(af.completed(job["provider_job_id"]))
        async with server.client() as client:
            forged = await client.post(
                sent.json["webhookUrl"], content=raw, headers={**headers, "X-Webhook-Signature": "sha256=" + "0" * 64}
            )
            assert forged.status_code == 401
            assert (await get_job(server, job["id"]))["status"] == "pending"
            done = await client.post(sent.json["webhookUrl"], content=raw, headers=headers)
        assert done.status_code == 200, done.text
        finished = await get_job(server, job["id"])
        assert finished["status"] == "succeeded"
        assert finished["outputs"] == [
            {
                "url": f"https://cdn.apiframe.ai/results/{job['provider_job_id']}.png",
                "media_type": "image/png",
                **UNMIRRORED,
            }
        ]


async def test_oxen_submit_one_job_per_generation_then_stream(tmp_path: Path) -> None:
    fake = FakeOxen()
    fake.generations_per_request = 2
    async with serve_app(fake.app) as oxen_server:
        fake.base_url = oxen_server.base_url
        async with serve_receiver(tmp_path, oxen_api_key=OXEN_KEY, oxen_base_url=fake.base_url) as server:
            await fake.wait_connections(1)
            reply = await generate(
                server,
                {
                    "provider": "oxen",
                    "prompt": "a red fox",
                    "params": {"output_format": "png"},
                    "metadata": {"batch": "b1"},
                },
            )
            assert reply.status_code == 202, reply.text
            jobs = reply.json()["jobs"]
            (sent,) = fake.requests_to("/api/ai/queue", "POST")
            assert sent.headers["authorization"] == f"Bearer {OXEN_KEY}"
            assert json.loads(sent.body) == {
                "model": "xai-grok-imagine-image",
                "prompt": "a red fox",
                "output_format": "png",
            }
            assert sorted(j["provider_job_id"] for j in jobs) == sorted(fake.generations)
            assert all(j["metadata"] == {"batch": "b1"} and j["status"] == "pending" for j in jobs)

            fake.complete(jobs[0]["provider_job_id"])
            fake.complete(jobs[1]["provider_job_id"], error="Insufficient credits")
            first, second = [await wait_job(server, j["id"]) for j in jobs]
            assert first["status"] == "succeeded" and first["outputs"][0]["url"].startswith("https://cdn.oxen.test/")
            assert second["status"] == "failed" and second["error"] == "Insufficient credits"


async def test_lumenfall_answers_at_once_then_completes_in_background(tmp_path: Path) -> None:
    fake = lf.FakeLumenfall()
    fake.delay_s = 10  # until released: the API must answer before Lumenfall does
    async with (
        fake.serve("/openai/v1"),
        serve_receiver(tmp_path, lumenfall_api_key=lf.API_KEY, lumenfall_base_url=fake.base_url) as server,
    ):
        reply = await generate(
            server, {"provider": "lumenfall", "prompt": "a red fox", "params": {"n": 2}, "metadata": {"k": "v"}}
        )
        assert reply.status_code == 202, reply.text
        (job,) = reply.json()["jobs"]
        assert job["status"] == "pending" and job["metadata"] == {"k": "v"}
        assert job["provider_job_id"].startswith("receiver-") and is_uuid4(
            job["provider_job_id"].removeprefix("receiver-")
        )
        await fake.wait_requests("/openai/v1/images/generations", 1, "POST")
        (sent,) = fake.requests
        assert sent.headers["authorization"] == f"Bearer {lf.API_KEY}"
        assert sent.json == {"model": "grok-imagine-image", "prompt": "a red fox", "n": 2}
        assert (await get_job(server, job["id"]))["status"] == "pending"

        fake._released.set()
        finished = await wait_job(server, job["id"])
        assert finished["status"] == "succeeded"
        assert [o["url"] for o in finished["outputs"]] == [
            "https://media.lumenfall.ai/generations/1-0.png",
            "https://media.lumenfall.ai/generations/1-1.png",
        ]
        async with server.api() as api:
            (receipt,) = (await api.get("/v1/receipts", params={"provider": "lumenfall"})).json()["receipts"]
        assert receipt["source"] == "response" and receipt["outcome"] == "applied"
        assert json.loads(receipt["body"])["data"][0]["url"] == finished["outputs"][0]["url"]
        assert not server.runtime.background  # the task is gone once done


async def test_lumenfall_failures_fail_the_job_with_the_providers_message(tmp_path: Path) -> None:
    fake = lf.FakeLumenfall()
    async with (
        fake.serve("/openai/v1"),
        serve_receiver(
            tmp_path, lumenfall_api_key=lf.API_KEY, lumenfall_base_url=fake.base_url, lumenfall_timeout_s=3
        ) as server,
    ):
        cases: list[tuple[str, Any, str]] = [
            (
                "refusal",
                (400, {"error": {"message": "Prompt rejected by content policy", "type": "invalid_request_error"}}),
                "Prompt rejected by content policy",
            ),
            (
                "answer",
                (200, b'{"created": 1, "data": []}'),
                "unusable answer from Lumenfall: 'data' must be a non-empty list",
            ),
            ("timeout", None, "lumenfall did not answer within 3 s"),
        ]
        for name, script, message in cases:
            fake.refusal = script if name == "refusal" else None
            fake.answer = script if name == "answer" else None
            fake.delay_s = 30 if name == "timeout" else 0  # the others answer at once, well within 3 s
            reply = await generate(server, {"provider": "lumenfall", "prompt": name})
            assert reply.status_code == 202, reply.text
            job = await wait_job(server, reply.json()["jobs"][0]["id"])
            assert (job["status"], job["error"]) == ("failed", message), name


async def test_lumenfall_call_in_flight_at_shutdown_is_cancelled_and_recorded(tmp_path: Path) -> None:
    fake = lf.FakeLumenfall()
    fake.delay_s = 30
    settings: dict[str, Any] = {"lumenfall_api_key": lf.API_KEY}
    async with fake.serve("/openai/v1"):
        async with serve_receiver(tmp_path, lumenfall_base_url=fake.base_url, **settings) as server:
            reply = await generate(server, {"provider": "lumenfall", "prompt": "slow"})
            job_id = reply.json()["jobs"][0]["id"]
            await fake.wait_requests("/openai/v1/images/generations", 1, "POST")
            assert len(server.runtime.background) == 1
            task = next(iter(server.runtime.background))
            started = time.monotonic()
        assert time.monotonic() - started < 5  # shutdown did not wait out the 30 s call
        assert task.cancelled()
        async with serve_receiver(tmp_path, lumenfall_base_url=fake.base_url, **settings) as again:
            job = await get_job(again, job_id)
        assert (job["status"], job["error"]) == ("failed", INTERRUPTED)


# -- refusals ---------------------------------------------------------------------------------------


class RefusingOxen(FakeProvider):
    """Just Oxen's `POST /api/ai/queue`, refusing as scripted (the stream is tests/fakes/oxen.py's business)."""

    def __init__(self) -> None:
        super().__init__(OXEN_KEY)
        self.app = Starlette(routes=[Route("/api/ai/queue", self._enqueue, methods=["POST"])])

    async def _enqueue(self, request: Request) -> Response:
        await self.record(request)
        refused = await self.hold()
        return refused or JSONResponse({"generations": [{"generation_id": uuid.uuid4().hex, "status": "queued"}]})


# Per provider: its fake (and where it serves), and scripted refusals with the message the 502 must carry.
REFUSALS: dict[str, tuple[Callable[[], FakeProvider], str, list[tuple[int, Any, str]]]] = {
    "pixazo": (
        px.FakePixazo,
        "",
        [
            (*px.INSUFFICIENT, "Your wallet does not have enough balance."),
            (
                429,
                {"error": "Too Many Requests", "message": "Rate limit exceeded. Retry in 10 s."},
                "Rate limit exceeded. Retry in 10 s.",
            ),
            (500, {"error": "Internal Server Error"}, "Internal Server Error"),
        ],
    ),
    "runware": (
        rw.FakeRunware,
        "/v1",
        [
            (
                402,
                rw.error(str(uuid.uuid4()), "Insufficient credits to perform this task."),
                "Insufficient credits to perform this task.",
            ),
            (429, {"errors": [{"code": "rateLimitExceeded", "message": "Too many requests."}]}, "Too many requests."),
            (500, {"errors": [{"code": "internalError"}]}, "internalError"),
        ],
    ),
    "apiframe": (
        af.FakeApiframe,
        "",
        [
            (402, {"error": "Payment Required", "message": "Not enough credits"}, "Not enough credits"),
            (429, {"error": "Too Many Requests"}, "Too Many Requests"),
            (500, {"error": "Internal Server Error", "message": "Something went wrong"}, "Something went wrong"),
        ],
    ),
    "oxen": (
        RefusingOxen,
        "",
        [
            (
                402,
                {"error": {"type": "insufficient_funds", "message": "Insufficient credits"}, "status": "error"},
                "Insufficient credits",
            ),
            (
                429,
                {"status": "error", "status_message": "rate limited", "error": {"type": "rate_limited"}},
                "rate_limited",
            ),
            (500, "upstream exploded", "upstream exploded"),
        ],
    ),
}


@pytest.mark.parametrize("provider", list(REFUSALS))
async def test_refusals_and_timeouts_are_502s_leaving_no_job(tmp_path: Path, provider: str) -> None:
    """Each scripted refusal → 502 with the provider's status and message; then a timeout; nothing pending left."""
    make_fake, path, cases = REFUSALS[provider]
    fake = make_fake()
    async with (
        fake.serve(path),
        serve_receiver(
            tmp_path,
            provider_timeout_s=0.3,
            **dict[str, Any](
                {
                    f"{provider}_api_key": fake.api_key,
                    f"{provider}_base_url": fake.base_url,
                }
            ),
        ) as server,
    ):
        for status, body, message in cases:
            fake.refusal = (status, body)
            reply = await generate(server, {"provider": provider, "prompt": "a red fox"})
            assert reply.status_code == 502, reply.text
            assert reply.json() == {"error": "provider_refused", "provider_status": status, "message": message}
        fake.refusal, fake.delay_s = None, 60  # held until the fake stops: only the deadline ends the submit
        reply = await generate(server, {"provider": provider, "prompt": "a red fox"})
        assert reply.status_code == 502
        assert reply.json() == {
            "error": "provider_refused",
            "provider_status": None,
            "message": f"{provider} did not answer within 0.3 s",
        }
        assert await jobs_of(server, provider) == []
        async with server.client() as client:
            metrics = (await client.get("/metrics")).text
        assert f'receiver_submissions_total{{provider="{provider}",result="refused"}} {len(cases) + 1}.0' in metrics


async def test_unusable_answer_and_unreachable_provider_are_refusals(tmp_path: Path) -> None:
    fake = px.FakePixazo()
    async with (
        fake.serve(),
        serve_receiver(
            tmp_path,
            pixazo_api_key=px.API_KEY,
            pixazo_base_url=fake.base_url,
            apiframe_api_key=af.API_KEY,
            apiframe_base_url=f"http://127.0.0.1:{free_port()}",
        ) as server,
    ):
        fake.refusal = (202, {"status": "QUEUED"})  # accepted, but no request_id to follow
        reply = await generate(server, {"provider": "pixazo", "prompt": "x"})
        assert reply.status_code == 502
        assert reply.json() == {
            "error": "provider_refused",
            "provider_status": 202,
            "message": "unexpected answer from pixazo: 'request_id' must be a non-empty string",
        }
        reply = await generate(server, {"provider": "apiframe", "prompt": "x"})
        assert reply.status_code == 502 and reply.json()["provider_status"] is None
        assert reply.json()["message"].startswith("cannot reach apiframe: ConnectError")
        async with server.api() as api:
            assert (await api.get("/v1/jobs")).json()["jobs"] == []


# -- requests refused by the receiver itself -------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
async def test_missing_api_key_names_the_setting(tmp_path: Path, provider: str) -> None:
    async with serve_receiver(tmp_path) as server:
        reply = await generate(server, {"provider": provider, "prompt": "a red fox"})
        assert reply.status_code == 422
        setting = f"RECEIVER_{provider.upper()}_API_KEY"
        assert reply.json()["setting"] == setting and setting in reply.json()["message"]
        async with server.api() as api:
            assert (await api.get("/v1/jobs")).json()["jobs"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"prompt": "x"}, "provider", id="no-provider"),
        pytest.param({"provider": "midjourney", "prompt": "x"}, "provider", id="unknown-provider"),
        pytest.param({"provider": "runware"}, "prompt", id="no-prompt"),
        pytest.param({"provider": "runware", "prompt": "   "}, "prompt", id="blank-prompt"),
        pytest.param(
            {"provider": "runware", "prompt": "x", "input_image": "file:///etc/passwd"},
            "input_image",
            id="input-image-a-file",
        ),
        pytest.param({"provider": "runware", "prompt": "x", "params": [1]}, "params", id="params-not-an-object"),
        pytest.param(
            {"provider": "runware", "prompt": "x", "callback_url": "ftp://x"},
            "callback_url",
            id="callback-url-not-http",
        ),
        pytest.param({"provider": "runware", "prompt": "x", "colour": "red"}, "colour", id="unknown-field"),
        pytest.param(
            {"provider": "runware", "prompt": "x", "params": {"numberResults": 99}},
            "params.numberResults",
            id="too-many-results",
        ),
        pytest.param(
            {"provider": "lumenfall", "prompt": "x", "input_image": "https://i.test/a.png"},
            "input_image",
            id="lumenfall-edit",
        ),
    ],
)
async def test_bad_requests_are_422_naming_the_field(tmp_path: Path, body: dict[str, Any], field: str) -> None:
    async with serve_receiver(
        tmp_path,
        lumenfall_api_key=lf.API_KEY,
        runware_api_key=rw.API_KEY,
        lumenfall_base_url=f"http://127.0.0.1:{free_port()}",
    ) as server:
        reply = await generate(server, body)
        assert reply.status_code == 422, reply.text
        assert field in [f["field"] for f in reply.json()["fields"]], reply.json()
        assert await jobs_of(server, "lumenfall") == []


async def test_unauthenticated_or_unreadable_requests_are_refused(tmp_path: Path) -> None:
    async with serve_receiver(tmp_path, runware_api_key=rw.API_KEY) as server:
        async with server.client() as client:
            assert (
                await client.post("/v1/generations", json={"provider": "runware", "prompt": "x"})
            ).status_code == 401
            not_json = await client.post(
                "/v1/generations", content=b"{", headers={"Authorization": "Bearer test-api-token"}
            )
            assert not_json.status_code == 422
        assert await jobs_of(server, "runware") == []


async def test_runtime_tracks_background_tasks(tmp_path: Path) -> None:
    """`spawn` keeps a reference until the work ends, and close() cancels what is left."""
    async with serve_receiver(tmp_path) as server:
        runtime = server.runtime
        done = runtime.spawn(asyncio.sleep(0), name="quick")
        forever = runtime.spawn(asyncio.sleep(3600), name="forever")
        await done
        await asyncio.sleep(0)
        assert runtime.background == {forever}
    assert forever.cancelled()


async def test_lumenfall_call_cut_off_by_a_crash_fails_at_restart(tmp_path: Path) -> None:
    """Lumenfall has no status endpoint: a call the receiver was running when it was SIGKILLed must not
    leave its job pending forever. The restarted receiver fails it; Lumenfall's own (video) jobs stay."""
    fake = lf.FakeLumenfall()
    fake.delay_s = 30  # the call is still running when the receiver dies
    async with fake.serve("/openai/v1"):
        env = process_env(tmp_path, RECEIVER_LUMENFALL_API_KEY=lf.API_KEY, RECEIVER_LUMENFALL_BASE_URL=fake.base_url)
        proc = ReceiverProcess(env).start()
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        try:
            async with httpx.AsyncClient(base_url=proc.base_url, headers=headers, timeout=10) as api:
                reply = await api.post("/v1/generations", json={"provider": "lumenfall", "prompt": "a red fox"})
                assert reply.status_code == 202, reply.text
                (job,) = reply.json()["jobs"]
                video = await api.post("/v1/jobs", json={"provider": "lumenfall", "provider_job_id": "vid_123"})
                assert video.status_code == 201
                await fake.wait_requests("/openai/v1/images/generations", 1, "POST")
            proc.kill()
            proc = ReceiverProcess(env, port=proc.port).start()
            async with httpx.AsyncClient(base_url=proc.base_url, headers=headers, timeout=10) as api:
                deadline = time.monotonic() + 10
                while (got := (await api.get(f"/v1/jobs/{job['id']}")).json())["status"] == "pending":
                    assert time.monotonic() < deadline, "the orphaned Lumenfall job stayed pending"
                    await asyncio.sleep(0.05)
                assert got["status"] == "failed" and "restarted" in got["error"]
                assert (await api.get(f"/v1/jobs/{video.json()['id']}")).json()["status"] == "pending"
        finally:
            proc.kill()


async def test_a_submit_cut_by_shutdown_is_never_submitted_twice(tmp_path: Path, store_url: str) -> None:
    """SIGTERM while the provider is still answering a keyed submit: the request gets a JSON 503 (not
    uvicorn's plain 500), and the key keeps saying the outcome is unknown, so a retry after the restart
    is not submitted again: the provider sees exactly one submit, whatever it did with it."""
    fake = px.FakePixazo()
    fake.delay_s = 60  # past the server's shutdown grace
    async with fake.serve():
        env = process_env(
            tmp_path,
            RECEIVER_PIXAZO_API_KEY=px.API_KEY,
            RECEIVER_PIXAZO_BASE_URL=fake.base_url,
            RECEIVER_PUBLIC_URL="https://receiver.example",
            RECEIVER_DATABASE_URL=store_url,
        )
        proc = ReceiverProcess(env).start()
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        keyed = {"Idempotency-Key": "nightly-cut-1"}
        body = {"provider": "pixazo", "prompt": "a red fox in snow"}
        try:
            async with httpx.AsyncClient(base_url=proc.base_url, headers=headers, timeout=60) as api:
                submit = asyncio.create_task(api.post("/v1/generations", json=body, headers=keyed))
                unkeyed = asyncio.create_task(api.post("/v1/generations", json=body))
                await fake.wait_requests("/", 2, "POST", timeout=20)
                assert proc.proc is not None
                proc.proc.send_signal(signal.SIGTERM)
                for cut in (await submit, await unkeyed):
                    assert cut.status_code == 503, cut.text
                    assert cut.headers["content-type"].startswith("application/json")
                    assert cut.json()["error"] == "shutting_down" and cut.json()["outcome_unknown"] is True
                assert await asyncio.to_thread(proc.proc.wait, 30) in (0, -signal.SIGTERM)  # not SIGKILLed
            proc = ReceiverProcess(env, port=proc.port).start()
            async with httpx.AsyncClient(base_url=proc.base_url, headers=headers, timeout=60) as api:
                retry = await api.post("/v1/generations", json=body, headers=keyed)
                assert retry.status_code == 409, retry.text
                assert retry.json()["error"] == "idempotency_outcome_unknown" and "unknown" in retry.json()["message"]
                # Another key is a new request: it is submitted.
                fake.delay_s = 0
                fresh = await api.post("/v1/generations", json=body, headers={"Idempotency-Key": "nightly-cut-2"})
                assert fresh.status_code == 202, fresh.text
            assert len(fake.requests_to("/", "POST")) == 3  # the two cut ones, once each, and the new key's
            assert "Traceback" not in proc.output()
        finally:
            proc.kill()
