"""Webhooks and the /v1 API over real HTTP against a real uvicorn server and SQLite file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from receiver.app import create_app
from receiver.providers import apiframe
from tests.support import (
    API_TOKEN,
    UNMIRRORED,
    WEBHOOK_TOKEN,
    ReceiverProcess,
    RunningServer,
    make_settings,
    process_env,
    serve_app,
)

PIXAZO_DONE = {
    "request_id": "px-1",
    "status": "COMPLETED",
    "output": {"media_url": ["https://cdn.pixazo.ai/px-1/output.jpeg"], "media_type": "image/jpeg"},
}


def hook(provider: str, token: str | None = WEBHOOK_TOKEN) -> str:
    return f"/webhooks/{provider}" + (f"?token={token}" if token is not None else "")


async def receipts(server: RunningServer, **params: str) -> list[dict]:
    async with server.api() as api:
        return (await api.get("/v1/receipts", params=params)).json()["receipts"]


async def test_webhook_applies_and_get_shows_it(server: RunningServer) -> None:
    async with server.client() as client, server.api() as api:
        reply = await client.post(hook("pixazo"), content=json.dumps(PIXAZO_DONE))
        assert reply.status_code == 200, reply.text
        assert reply.json()["outcome"] == "applied"
        (job_id,) = reply.json()["job_ids"]
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        assert job["status"] == "succeeded"
        assert job["outputs"] == [
            {"url": "https://cdn.pixazo.ai/px-1/output.jpeg", "media_type": "image/jpeg", **UNMIRRORED}
        ]
        assert job["provider"] == "pixazo" and job["provider_job_id"] == "px-1"
        assert job["created_at"].endswith("Z") and job["completed_at"].endswith("Z")
        assert job["delivery_status"] == "none" and job["callback_url"] is None

        again = await client.post(hook("pixazo"), content=json.dumps(PIXAZO_DONE))
        assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
        assert (await api.get(f"/v1/jobs/{job_id}")).json() == job


async def test_registration_claims_the_early_result(server: RunningServer) -> None:
    async with server.client() as client, server.api() as api:
        (early,) = (await client.post(hook("pixazo"), content=json.dumps(PIXAZO_DONE))).json()["job_ids"]
        reg = await api.post("/v1/jobs", json={"provider": "pixazo", "provider_job_id": "px-1", "metadata": {"run": 7}})
        assert reg.status_code == 200 and reg.json()["id"] == early and reg.json()["metadata"] == {"run": 7}
        new = await api.post("/v1/jobs", json={"provider": "apiframe", "provider_job_id": "af-1"})
        assert new.status_code == 201 and new.json()["status"] == "pending"
        same = await api.post("/v1/jobs", json={"provider": "apiframe", "provider_job_id": "af-1"})
        assert same.status_code == 200 and same.json()["id"] == new.json()["id"]


@pytest.mark.parametrize(
    "url, code",
    [(hook("pixazo", None), 401), (hook("pixazo", "wrong"), 401), (hook("pixazo", ""), 401), (hook("midjourney"), 404)],
)
async def test_auth_and_unknown_provider_store_nothing(server: RunningServer, url: str, code: int) -> None:
    async with server.client() as client:
        reply = await client.post(url, content=json.dumps(PIXAZO_DONE))
    assert reply.status_code == code and reply.json()["error"]
    assert await receipts(server) == []


@pytest.mark.parametrize(
    "raw, says",
    [
        (b"", "empty"),
        (b"{not json", "not JSON"),
        (b"\xc3\x28\xff", "UTF-8"),
        (b"[]", "JSON object"),
        (json.dumps({"request_id": "x", "status": 5}).encode(), "status"),
        (json.dumps({"request_id": ["x"], "status": "COMPLETED"}).encode(), "request_id"),
        (json.dumps({"request_id": "x", "status": "COMPLETED", "output": "nope"}).encode(), "output"),
    ],
)
async def test_bad_bodies_are_400_and_kept_as_invalid(server: RunningServer, raw: bytes, says: str) -> None:
    async with server.client() as client:
        reply = await client.post(hook("pixazo"), content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert says in reply.json()["message"]
    (kept,) = await receipts(server, outcome="invalid")
    assert kept["id"] == reply.json()["receipt_id"] and kept["provider"] == "pixazo"
    assert kept["error"] and says in kept["error"]
    if "body_base64" in kept:
        import base64

        assert base64.b64decode(kept["body_base64"]) == raw
    else:
        assert kept["body"].encode() == raw


async def test_body_over_limit_is_413_declared_or_streamed(tmp_path: Path) -> None:
    async with serve_app(create_app(make_settings(tmp_path, max_body_bytes=1000))) as server:
        big = b'{"pad": "' + b"x" * 2000 + b'"}'

        async def chunked() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 100):
                yield big[i : i + 100]

        async with server.client() as client:
            assert (await client.post(hook("pixazo"), content=big)).status_code == 413
            assert (await client.post(hook("pixazo"), content=chunked())).status_code == 413
            ok = await client.post(hook("pixazo"), content=json.dumps(PIXAZO_DONE))
            assert ok.status_code == 200
        assert [r["outcome"] for r in await receipts(server)] == ["applied"]


async def test_apiframe_signature_checked_when_key_set(tmp_path: Path) -> None:
    key = "apiframe-key"
    body = json.dumps(
        {
            "event": "completed",
            "jobId": "af-9",
            "status": "COMPLETED",
            "result": "https://cdn.apiframe.ai/results/af-9.png",
        }
    ).encode()
    async with serve_app(create_app(make_settings(tmp_path, apiframe_api_key=key))) as server:
        async with server.client() as client:
            forged = await client.post(
                hook("apiframe"), content=body, headers={"X-Webhook-Signature": apiframe.sign("x", body)}
            )
            missing = await client.post(hook("apiframe"), content=body)
            assert forged.status_code == missing.status_code == 401
            assert await receipts(server) == []
            good = await client.post(
                hook("apiframe"),
                content=body,
                headers={"X-Webhook-Signature": apiframe.sign(key, body), "X-Webhook-Event": "completed"},
            )
            assert good.status_code == 200 and good.json()["outcome"] == "applied"
            progress = json.dumps(
                {"event": "progress", "jobId": "af-9", "status": "PROCESSING", "progress": 45}
            ).encode()
            late = await client.post(
                hook("apiframe"), content=progress, headers={"X-Webhook-Signature": apiframe.sign(key, progress)}
            )
            assert late.json()["outcome"] == "ignored"
        async with server.api() as api:
            job = (await api.get(f"/v1/jobs/{good.json()['job_ids'][0]}")).json()
        assert job["status"] == "succeeded" and job["outputs"][0]["media_type"] == "image/png"


async def test_runware_images_collected_over_http(server: RunningServer) -> None:
    task = "0b4e2b5c-8a36-4f38-9f55-d7e2f9d1f0aa"
    async with server.client() as client, server.api() as api:
        reg = await api.post("/v1/jobs", json={"provider": "runware", "provider_job_id": task, "expected_outputs": 2})
        job_id = reg.json()["id"]
        for key in ("img-1", "img-1", "img-2"):
            body = {
                "data": [
                    {
                        "taskType": "imageInference",
                        "taskUUID": task,
                        "imageUUID": key,
                        "imageURL": f"https://im.runware.ai/image/{key}.jpg",
                        "cost": 0.001,
                    }
                ]
            }
            assert (await client.post(hook("runware"), json=body)).status_code == 200
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        assert job["status"] == "succeeded" and len(job["outputs"]) == 2
        fail = {"data": [], "errors": [{"code": "x", "message": "Invalid model", "taskUUID": "other-task"}]}
        assert (await client.post(hook("runware"), json=fail)).json()["outcome"] == "applied"
        failed = (await api.get("/v1/jobs", params={"status": "failed"})).json()["jobs"]
        assert [(j["provider_job_id"], j["error"]) for j in failed] == [("other-task", "Invalid model")]


async def test_api_needs_the_bearer_token(server: RunningServer) -> None:
    async with server.client() as client:
        for method, path in [
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/receipts"),
            ("GET", "/v1/jobs/x"),
            ("GET", "/v1/events"),
        ]:
            reply = await client.request(method, path)
            assert reply.status_code == 401, path
            wrong = await client.request(method, path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path


@pytest.mark.parametrize(
    "body, field",
    [
        ({"provider": "dalle", "provider_job_id": "x"}, "provider"),
        ({"provider": "pixazo"}, "provider_job_id"),
        ({"provider": "pixazo", "provider_job_id": ""}, "provider_job_id"),
        ({"provider": "pixazo", "provider_job_id": "x", "callback_url": "ftp://x/y"}, "callback_url"),
        ({"provider": "pixazo", "provider_job_id": "x", "callback_url": "not a url"}, "callback_url"),
        ({"provider": "pixazo", "provider_job_id": "x", "metadata": [1]}, "metadata"),
        ({"provider": "runware", "provider_job_id": "x", "expected_outputs": 0}, "expected_outputs"),
        ({"provider": "pixazo", "provider_job_id": "x", "surprise": 1}, "surprise"),
    ],
)
async def test_register_rejects_bad_fields_with_422(server: RunningServer, body: dict, field: str) -> None:
    async with server.api() as api:
        reply = await api.post("/v1/jobs", json=body)
    assert reply.status_code == 422
    assert field in [f["field"] for f in reply.json()["fields"]]
    assert field in reply.json()["message"]


async def test_api_rejects_non_json_and_bad_queries(server: RunningServer) -> None:
    async with server.api() as api:
        assert (await api.post("/v1/jobs", content=b"\xff")).status_code == 422
        assert (await api.post("/v1/jobs", content=b"[]")).status_code == 422
        for params in ({"limit": "0"}, {"limit": "x"}, {"status": "done"}, {"provider": "x"}, {"cursor": "abc"}):
            reply = await api.get("/v1/jobs", params=params)
            assert reply.status_code == 422, params
            assert next(iter(params)) in reply.json()["message"]
        assert (await api.get("/v1/receipts", params={"outcome": "weird"})).status_code == 422
        assert (await api.get("/v1/jobs/job_missing")).status_code == 404


async def test_acknowledged_webhooks_survive_a_kill(tmp_path: Path) -> None:
    proc = ReceiverProcess(process_env(tmp_path)).start()
    try:
        async with httpx.AsyncClient(base_url=proc.base_url) as client:
            ids = []
            for i in range(20):
                body = {**PIXAZO_DONE, "request_id": f"kill-{i}"}
                reply = await client.post(hook("pixazo"), json=body)
                assert reply.status_code == 200
                ids.append(reply.json()["job_ids"][0])
        proc.kill()  # SIGKILL: no shutdown, no flush
        proc = ReceiverProcess(process_env(tmp_path), port=proc.port).start()
        async with httpx.AsyncClient(base_url=proc.base_url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as api:
            for job_id in ids:
                job = (await api.get(f"/v1/jobs/{job_id}")).json()
                assert job["status"] == "succeeded"
    finally:
        proc.kill()


async def test_generated_secrets_persist_across_restarts(tmp_path: Path) -> None:
    env = process_env(tmp_path)
    for name in ("RECEIVER_API_TOKEN", "RECEIVER_WEBHOOK_TOKEN", "RECEIVER_SIGNING_SECRET"):
        env[name] = ""
    import subprocess
    import sys

    def info() -> str:
        return subprocess.run(
            [sys.executable, "-m", "receiver", "info"],
            env={**__import__("os").environ, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    proc = ReceiverProcess(env).start()  # the first start generates the secrets and keeps them in the store
    first = info()
    proc.stop()
    proc = ReceiverProcess(env).start()  # a restart finds them
    try:
        second = info()
        assert first == second
        token = next(line.split()[-1] for line in first.splitlines() if line.startswith("Webhook token"))
        assert f"/webhooks/pixazo?token={token}" in first and "whsec_" in first
        reply = httpx.post(f"{proc.base_url}{hook('pixazo', token)}", json=PIXAZO_DONE)
        assert reply.status_code == 200
        assert httpx.post(f"{proc.base_url}{hook('pixazo')}", json=PIXAZO_DONE).status_code == 401
    finally:
        proc.stop()
