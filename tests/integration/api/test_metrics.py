"""`GET /metrics`: drive webhooks, deliveries, the Oxen stream and the reconciler, then read the numbers back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from receiver.app import create_app
from tests.fakes.callback import Reply, callback_server
from tests.fakes.oxen import API_KEY as OXEN_KEY
from tests.fakes.oxen import FAST_TUNING, FakeOxen
from tests.fakes.pixazo import API_KEY as PIXAZO_KEY
from tests.fakes.pixazo import FakePixazo, completed
from tests.support import WEBHOOK_TOKEN, RunningServer, eventually, free_port, make_settings, serve_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: RunningServer) -> Samples:
    async with server.client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def post(client: httpx.AsyncClient, provider: str, body: Any, token: str = WEBHOOK_TOKEN) -> int:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (await client.post(f"/webhooks/{provider}", params={"token": token}, content=raw)).status_code


async def test_metrics_count_webhooks_deliveries_stream_and_polls(tmp_path: Path, fake_oxen: FakeOxen) -> None:
    pixazo = FakePixazo()
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: every attempt is refused
    async with callback_server(Reply(500)) as sink, pixazo.serve():
        settings = make_settings(
            tmp_path,
            default_callback_url=sink.url(),
            retry_schedule=(0.05, 60),
            reconcile_after_s=0.2,
            oxen_api_key=OXEN_KEY,
            oxen_base_url=fake_oxen.base_url,
            pixazo_api_key=PIXAZO_KEY,
            pixazo_base_url=pixazo.base_url,
        )
        async with (
            serve_app(create_app(settings, stream_tuning=FAST_TUNING)) as server,
            server.client() as client,
            server.api() as api,
        ):
            server.runtime.metrics.job_counts_ttl_s = 0  # every scrape counts afresh (the cache: test_edges.py)
            await fake_oxen.wait_connections(1)
            before = await scrape(server)
            assert value(before, "receiver_deliveries_total", outcome="failed") == 0  # exists from the start
            assert (
                "receiver_receipts_total",
                (("outcome", "invalid"), ("provider", "runware"), ("source", "webhook")),
            ) in before

            # Webhooks: 2 applied, 1 duplicate, 1 ignored (progress), 1 invalid; 3 refused before storing.
            assert await post(client, "pixazo", completed("m_1")) == 200
            assert await post(client, "pixazo", completed("m_2")) == 200
            assert await post(client, "pixazo", completed("m_1")) == 200
            assert await post(client, "pixazo", {"request_id": "m_3", "status": "PROCESSING"}) == 200
            assert await post(client, "pixazo", b"{not json") == 400
            assert await post(client, "pixazo", completed("m_4"), token="wrong") == 401
            assert await post(client, "nope", completed("m_5")) == 404
            assert await post(client, "made-up-name", completed("m_6")) == 404
            # A job whose own callback URL refuses: attempt 1 refused, attempt 2 refused, then a 60 s wait.
            reply = await api.post(
                "/v1/jobs", json={"provider": "pixazo", "provider_job_id": "m_7", "callback_url": dead}
            )
            assert reply.status_code == 201
            assert await post(client, "pixazo", completed("m_7")) == 200
            # A pending Pixazo job the reconciler polls; an Oxen job the stream finishes.
            pixazo.statuses["m_8"] = {
                "request_id": "m_8",
                "status": "PROCESSING",
                "model_id": "m",
                "error": None,
                "output": None,
            }
            assert (
                await api.post("/v1/jobs", json={"provider": "pixazo", "provider_job_id": "m_8"})
            ).status_code == 201
            generation = fake_oxen.submit()
            oxen_job = (await api.post("/v1/jobs", json={"provider": "oxen", "provider_job_id": generation})).json()
            fake_oxen.complete(generation)
            await eventually(lambda: job_status(api, oxen_job["id"], "succeeded"), what="the Oxen job finished")

            async def settled() -> bool:
                s = await scrape(server)
                return (
                    value(s, "receiver_deliveries_total", outcome="delivered") >= 3
                    and value(s, "receiver_deliveries_total", outcome="retry") >= 3
                    and value(s, "receiver_reconcile_polls_total", provider="pixazo", result="pending") >= 1
                )

            await eventually(settled, timeout=10, what="deliveries and a reconcile poll")
            s = await scrape(server)

            def receipts(outcome: str, provider: str = "pixazo", source: str = "webhook") -> float:
                return value(s, "receiver_receipts_total", provider=provider, source=source, outcome=outcome)

            assert (receipts("applied"), receipts("duplicate"), receipts("ignored"), receipts("invalid")) == (
                3,
                1,
                1,
                1,
            )
            assert receipts("applied", "oxen", "stream") == 1
            assert value(s, "receiver_webhooks_rejected_total", provider="pixazo", reason="unauthorized") == 1
            assert value(s, "receiver_webhooks_rejected_total", provider="unknown", reason="unknown_provider") == 2
            assert not any(dict(labels).get("provider") in ("nope", "made-up-name") for _, labels in s)

            # The first callback got the one scripted 500; m_1, m_2 and the Oxen job went to the default
            # callback URL and arrived; m_7 was refused twice and waits: it is the whole backlog.
            assert value(s, "receiver_deliveries_total", outcome="delivered") == 3
            assert value(s, "receiver_deliveries_total", outcome="retry") == 3
            assert value(s, "receiver_deliveries_total", outcome="failed") == 0
            assert value(s, "receiver_delivery_queue_depth") == 1
            assert 0 < value(s, "receiver_delivery_oldest_pending_age_seconds") < 30

            assert value(s, "receiver_jobs", status="succeeded") == 4  # m_1, m_2, m_7 and the Oxen job
            assert value(s, "receiver_jobs", status="pending") == 1  # m_8 (m_3's progress created no job)
            assert value(s, "receiver_jobs", status="failed") == 0

            assert value(s, "receiver_oxen_stream_connected") == 1
            assert value(s, "receiver_oxen_stream_state", state="connected") == 1
            assert value(s, "receiver_oxen_stream_state", state="connecting") == 0
            assert value(s, "receiver_oxen_stream_reconnects_total") == 1
            assert value(s, "receiver_reconcile_polls_total", provider="pixazo", result="pending") >= 1
            assert value(s, "process_resident_memory_bytes") > 0

            # The stream goes down and stays refused: the state and the reconnects say so.
            fake_oxen.refuse_streams = 503
            fake_oxen.drop()

            async def reconnecting() -> bool:
                s = await scrape(server)
                return (
                    value(s, "receiver_oxen_stream_state", state="connecting") == 1
                    and value(s, "receiver_oxen_stream_reconnects_total") >= 3
                )

            await eventually(reconnecting, what="the stream reported down and retried")
            s = await scrape(server)
            assert value(s, "receiver_oxen_stream_connected") == 0
            assert value(s, "receiver_oxen_stream_state", state="connected") == 0


async def job_status(api: httpx.AsyncClient, job_id: str, status: str) -> bool:
    return bool((await api.get(f"/v1/jobs/{job_id}")).json()["status"] == status)


async def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    async with (
        serve_app(create_app(make_settings(tmp_path / "a"))) as a,
        serve_app(create_app(make_settings(tmp_path / "b"))) as b,
        a.client() as client,
    ):
        assert await post(client, "pixazo", completed("only_a")) == 200
        assert (
            value(await scrape(a), "receiver_receipts_total", provider="pixazo", source="webhook", outcome="applied")
            == 1
        )
        assert (
            value(await scrape(b), "receiver_receipts_total", provider="pixazo", source="webhook", outcome="applied")
            == 0
        )
