"""What the running app sends is what `/openapi.json` says: each answer validates against its documented
schema, and every key in it is declared there (no undocumented field)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from jsonschema import Draft202012Validator

from tests.fakes.callback import Reply, callback_server
from tests.fakes.origin import media_origin
from tests.integration.media.support import deliver, mirroring_receiver
from tests.support import API_TOKEN, WEBHOOK_TOKEN, eventually


class Document:
    """The OpenAPI document, and checks of an answer against one of its schemas."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.schemas: dict[str, Any] = doc["components"]["schemas"]

    def answer_schema(self, path: str, method: str, status: int) -> dict[str, Any]:
        content = self.doc["paths"][path][method]["responses"][str(status)]["content"]
        schema: dict[str, Any] = content["application/json"]["schema"]
        return schema

    def check(self, schema: dict[str, Any], instance: Any, where: str) -> None:
        Draft202012Validator({**schema, "components": self.doc["components"]}).validate(instance)
        undocumented = self._undocumented(schema, instance, where)
        assert undocumented == [], f"sent but not in the OpenAPI document: {undocumented}"

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def _undocumented(self, schema: dict[str, Any], instance: Any, where: str) -> list[str]:
        schema = self._resolve(schema)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:  # `X | None`: the branch this value is
            fits = [
                b
                for b in branches
                if Draft202012Validator({**b, "components": self.doc["components"]}).is_valid(instance)
            ]
            return self._undocumented(fits[0], instance, where) if fits else []
        found: list[str] = []
        if isinstance(instance, dict) and "properties" in schema:
            properties = schema["properties"]
            found += [f"{where}.{key}" for key in instance if key not in properties]
            for key, value in instance.items():
                if key in properties:
                    found += self._undocumented(properties[key], value, f"{where}.{key}")
        elif isinstance(instance, dict) and isinstance(schema.get("additionalProperties"), dict):
            for key, value in instance.items():
                found += self._undocumented(schema["additionalProperties"], value, f"{where}.{key}")
        elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(instance):
                found += self._undocumented(schema["items"], item, f"{where}[{i}]")
        return found


async def checked(api: httpx.AsyncClient, doc: Document, method: str, url: str, path: str, **kwargs: Any) -> Any:
    """Call the API; check the answer against the document's schema for `path` and its status."""
    reply = await api.request(method, url, **kwargs)
    doc.check(doc.answer_schema(path, method.lower(), reply.status_code), reply.json(), f"{method} {url}")
    return reply.json()


def test_the_checker_finds_an_undocumented_key() -> None:
    doc = Document(
        {
            "paths": {},
            "components": {
                "schemas": {
                    "Thing": {
                        "type": "object",
                        "properties": {"a": {"anyOf": [{"$ref": "#/components/schemas/Inner"}, {"type": "null"}]}},
                    },
                    "Inner": {"type": "object", "properties": {"b": {"type": "integer"}}},
                }
            },
        }
    )
    thing = {"$ref": "#/components/schemas/Thing"}
    doc.check(thing, {"a": {"b": 1}}, "ok")
    doc.check(thing, {"a": None}, "ok")
    try:
        doc.check(thing, {"a": {"b": 1, "c": 2}}, "thing")
    except AssertionError as exc:
        assert "thing.a.c" in str(exc)
    else:
        raise AssertionError("an undocumented key went unnoticed")


async def test_every_answer_is_documented(tmp_path: Path) -> None:
    # One destination answers 500 then 200 (two attempts, delivered); the other always 500, and its
    # retries are an hour apart, so its message stays waiting.
    async with (
        media_origin() as origin,
        callback_server(Reply(500)) as good,
        callback_server(default=Reply(500, body=b"down")) as bad,
        mirroring_receiver(tmp_path, good, retry_schedule=(0.05, 3600)) as server,
        server.client(headers={"Authorization": f"Bearer {API_TOKEN}"}) as api,
    ):
        doc = Document((await api.get("/openapi.json")).json())

        mirrored = await deliver(server, "req-mirrored", origin.url("/img/3000"))
        registered = await checked(
            api,
            doc,
            "POST",
            "/v1/jobs",
            "/v1/jobs",
            json={
                "provider": "pixazo",
                "provider_job_id": "req-waiting",
                "callback_url": bad.url("/down"),
                "metadata": {"run": 7},
            },
        )
        await deliver(server, "req-waiting", origin.url("/img/2000-w"))

        async def delivered() -> bool:
            job = (await api.get(f"/v1/jobs/{mirrored}")).json()
            return job["delivery_status"] == "delivered" and job["outputs"][0]["sha256"] is not None

        await eventually(delivered, what="the mirrored job delivered")
        job = await checked(api, doc, "GET", f"/v1/jobs/{mirrored}", "/v1/jobs/{job_id}")
        assert job["outputs"][0]["stored_url"] and job["outputs"][0]["bytes"] == 3000
        attempts = await checked(api, doc, "GET", f"/v1/jobs/{mirrored}/deliveries", "/v1/jobs/{job_id}/deliveries")
        assert [a["status_code"] for a in attempts["deliveries"]] == [500, 200]

        async def waiting() -> list[dict[str, Any]]:
            found = (await api.get(f"/v1/jobs/{registered['id']}/deliveries")).json()["deliveries"]
            return [d for d in found if d["at"] is None and d["next_attempt_at"]]

        await eventually(waiting, what="a message waiting for its retry")
        await checked(api, doc, "GET", f"/v1/jobs/{registered['id']}/deliveries", "/v1/jobs/{job_id}/deliveries")
        await checked(api, doc, "GET", "/v1/jobs", "/v1/jobs")
        await checked(api, doc, "GET", "/v1/jobs?status=succeeded&limit=1", "/v1/jobs")

        # A receipt with a body that is not UTF-8 (kept as an invalid receipt, with body_base64), and
        # refusals (a bad token; an unknown provider).
        bad_body = await api.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=b"\xff\xfe not json")
        assert bad_body.status_code == 400
        assert (await api.post("/webhooks/pixazo?token=wrong", content=b"{}")).status_code == 401
        assert (await api.post(f"/webhooks/nope?token={WEBHOOK_TOKEN}", content=b"\xff")).status_code == 404
        receipts = await checked(api, doc, "GET", "/v1/receipts", "/v1/receipts")
        assert any("body_base64" in r for r in receipts["receipts"])
        refusals = await checked(api, doc, "GET", "/v1/refusals", "/v1/refusals")
        assert {r["reason"] for r in refusals["refusals"]} >= {"unauthorized", "unknown_provider"}
        assert any("body_base64" in r for r in refusals["refusals"])
        await checked(api, doc, "GET", "/v1/stats", "/v1/stats")

        # Actions and errors.
        await checked(api, doc, "POST", f"/v1/jobs/{mirrored}/redeliver", "/v1/jobs/{job_id}/redeliver")
        await checked(api, doc, "POST", f"/v1/jobs/{registered['id']}/redeliver", "/v1/jobs/{job_id}/redeliver")
        await checked(
            api,
            doc,
            "POST",
            "/v1/redeliveries",
            "/v1/redeliveries",
            json={"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
        )
        await checked(
            api, doc, "PATCH", f"/v1/jobs/{registered['id']}", "/v1/jobs/{job_id}", json={"metadata": {"run": 8}}
        )
        terminal = await checked(api, doc, "POST", f"/v1/jobs/{mirrored}/cancel", "/v1/jobs/{job_id}/cancel")
        assert terminal["error"] == "already_terminal" and terminal["job"]["id"] == mirrored
        invalid = await checked(api, doc, "POST", "/v1/jobs", "/v1/jobs", json={"provider": "pixazo"})
        assert invalid["fields"][0]["field"] == "provider_job_id"
        await checked(api, doc, "GET", "/v1/jobs/nope", "/v1/jobs/{job_id}")
        unauthorized = await api.get("/v1/jobs", headers={"Authorization": "Bearer wrong"})
        doc.check(doc.answer_schema("/v1/jobs", "get", 401), unauthorized.json(), "401")

        # The events' data is the documented Job.
        data_schema = doc.doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"][
            "x-event-data"
        ]
        seen = set()
        async with asyncio.timeout(20), aconnect_sse(api, "GET", "/v1/events", params={"last_event_id": "0"}) as source:
            async for sse in source.aiter_sse():
                event = json.loads(sse.data)
                doc.check(data_schema, event, f"event {sse.id}")
                seen.add(event["id"])
                if {mirrored, registered["id"]} <= seen:
                    break
