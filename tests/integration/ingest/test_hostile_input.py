"""Inputs the fuzzer (tests/faults/fuzz.py) found answered with a 500: each is now a clear 4xx, and a webhook's
bytes are still kept as an `invalid` receipt."""

from __future__ import annotations

import base64
import logging
from dataclasses import replace
from typing import Any

import pytest

from receiver.providers import REGISTRY
from tests.support import UNMIRRORED, WEBHOOK_TOKEN, RunningServer

DEEP = b"[" * 100_000 + b"]" * 100_000


async def last_receipt(server: RunningServer) -> dict[str, Any]:
    async with server.api() as api:
        return dict((await api.get("/v1/receipts", params={"limit": 1})).json()["receipts"][0])


WEBHOOK_BODIES = {
    "deep array": (DEEP, "nested too deeply"),
    "deep in an object": (
        b'{"request_id": "d", "status": "COMPLETED", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        "nested too deeply",
    ),
    "huge integer": (b'{"request_id": ' + b"9" * 5000 + b', "status": "FAILED"}', "4300 digits"),
    "surrogate id": (b'{"request_id": "\\ud800", "status": "FAILED"}', "surrogate"),
    "surrogate URL": (
        b'{"request_id": "s", "status": "COMPLETED", "output": {"media_url": ["https://x/\\udfff.png"]}}',
        "surrogate",
    ),
}


@pytest.mark.parametrize(("body", "says"), list(WEBHOOK_BODIES.values()), ids=list(WEBHOOK_BODIES))
async def test_webhook_bodies_that_broke_the_decoder_are_invalid_receipts(
    server: RunningServer, body: bytes, says: str
) -> None:
    async with server.client() as client:
        reply = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=body)
    assert reply.status_code == 400, reply.text
    assert says in reply.json()["message"]
    receipt = await last_receipt(server)
    assert receipt["id"] == reply.json()["receipt_id"] and receipt["outcome"] == "invalid"
    kept = base64.b64decode(receipt["body_base64"]) if "body_base64" in receipt else receipt["body"].encode()
    assert kept == body


async def test_unreadable_output_url_and_mended_error_text_still_apply(server: RunningServer) -> None:
    async with server.client() as client, server.api() as api:
        url = await client.post(
            f"/webhooks/runware?token={WEBHOOK_TOKEN}",
            content=b'{"data": [{"taskUUID": "t6", "imageURL": "http://[::1"}]}',
        )
        assert url.status_code == 200 and url.json()["outcome"] == "applied"
        job = (await api.get(f"/v1/jobs/{url.json()['job_ids'][0]}")).json()
        assert job["outputs"] == [{"url": "http://[::1", "media_type": None, **UNMIRRORED}]
        error = await client.post(
            f"/webhooks/pixazo?token={WEBHOOK_TOKEN}",
            content=b'{"request_id": "e1", "status": "FAILED", "error": "bad \\udfff byte"}',
        )
        assert error.status_code == 200
        assert (await api.get(f"/v1/jobs/{error.json()['job_ids'][0]}")).json()["error"] == "bad ? byte"


async def test_an_adapter_bug_is_a_400_and_the_bytes_are_kept(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(headers: Any, body: bytes) -> Any:
        raise KeyError("surprise")

    # The registry's record holds the adapter's functions: the broken one goes in a copy of it.
    monkeypatch.setitem(REGISTRY, "pixazo", replace(REGISTRY["pixazo"], webhook=broken))
    with caplog.at_level(logging.ERROR, logger="receiver.ingest.inbound"):
        async with server.client() as client:
            reply = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=b'{"request_id": "x"}')
    assert reply.status_code == 400 and "KeyError" in reply.json()["message"]
    assert (await last_receipt(server))["body"] == '{"request_id": "x"}'
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)  # loud: it is a bug


API_BODIES = {
    "NaN": (b'{"provider": "pixazo", "provider_job_id": "n", "metadata": {"a": NaN}}', "NaN is not JSON"),
    "Infinity": (
        b'{"provider": "pixazo", "provider_job_id": "n", "metadata": {"a": -Infinity}}',
        "Infinity is not JSON",
    ),
    "1e999": (b'{"provider": "pixazo", "provider_job_id": "n", "metadata": {"a": 1e999}}', "out of range"),
    "huge integer": (
        b'{"provider": "pixazo", "provider_job_id": "n", "expected_outputs": ' + b"1" * 5000 + b"}",
        "4300 digits",
    ),
    "deep": (b'{"provider": "pixazo", "provider_job_id": "n", "metadata": ' + DEEP + b"}", "nested deeper than 32"),
    "33 levels": (
        b'{"provider": "pixazo", "provider_job_id": "n", "metadata": ' + b"[" * 33 + b"]" * 33 + b"}",
        "nested deeper",
    ),
    "surrogate value": (b'{"provider": "pixazo", "provider_job_id": "\\ud800"}', "surrogate"),
    "surrogate key": (b'{"provider": "pixazo", "provider_job_id": "n", "metadata": {"\\udfff": 1}}', "surrogate"),
}


@pytest.mark.parametrize(("body", "says"), list(API_BODIES.values()), ids=list(API_BODIES))
async def test_api_bodies_that_broke_the_api_are_422(server: RunningServer, body: bytes, says: str) -> None:
    async with server.api() as api:
        reply = await api.post("/v1/jobs", content=body)
        assert reply.status_code == 422 and says in reply.json()["message"], reply.text
        assert reply.json()["fields"][0]["field"] == "body"
        assert (await api.get("/v1/jobs")).json()["jobs"] == []  # nothing was created


async def test_32_levels_of_metadata_are_fine(server: RunningServer) -> None:
    nested = b"[" * 31 + b"]" * 31  # the body object is level 1, metadata's value levels 2-32
    async with server.api() as api:
        reply = await api.post(
            "/v1/jobs",
            content=b'{"provider": "pixazo", "provider_job_id": "ok", "metadata": {"a": '
            + nested[:30]
            + nested[-30:]
            + b"}}",
        )
        assert reply.status_code == 201, reply.text


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/receipts"])
@pytest.mark.parametrize(
    "cursor",
    ["99999999999999999999999", "²", "٣", "1" * 19],
    ids=["past-int64", "superscript-digit", "arabic-indic-digit", "19-digits"],
)
async def test_cursors_past_sqlite_integers_or_not_ascii_are_422(server: RunningServer, path: str, cursor: str) -> None:
    async with server.api() as api:
        reply = await api.get(path, params={"cursor": cursor})
    assert reply.status_code == 422 and "cursor" in reply.json()["message"], reply.text
