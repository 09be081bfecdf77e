"""Every event of /v1/events published to each broker: CloudEvents shape, order, outages, pause/resume/rewind,
a refused message, an unreachable broker at start, webhooks never slowed by a broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from receiver.app import create_app
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.sinks.brokers import PORTS, TestBroker
from tests.integration.sinks.common import check_complete, drained, fire, read_events, sink
from tests.support import API_TOKEN, eventually, make_settings, serve_app

PUBLIC = "https://receiver.example"


def app_for(tmp_path: Path, *urls: str):
    return create_app(make_settings(tmp_path, sinks=",".join(urls), public_url=PUBLIC))


async def test_cloudevents_in_order(tmp_path: Path, broker: TestBroker) -> None:
    async with serve_app(app_for(tmp_path, broker.url())) as server, server.client() as client, server.api() as api:
        await fire(client, "pix_ce", 40)
        sse = await read_events(api, 0, 40)
        assert sorted(sse) == list(range(1, 41))
        listed = await drained(api, broker.sink_name, 40)
        got = await eventually(lambda: _at_least(broker, 40), 30, "40 messages at the broker")
        check_complete(got, list(range(1, 41)), duplicates_kept=False)
        import orjson

        for m in got:
            ce = m.event
            seq = int(ce["id"])
            assert set(ce) == {
                "specversion",
                "id",
                "source",
                "type",
                "subject",
                "time",
                "datacontenttype",
                "sequence",
                "provider",
                "data",
            }
            assert ce["specversion"] == "1.0" and ce["source"] == PUBLIC and ce["sequence"] == str(seq)
            assert ce["datacontenttype"] == "application/json" and ce["provider"] == "pixazo"
            job = orjson.loads(sse[seq])
            assert ce["data"] == job and ce["subject"] == job["id"] and ce["time"] == job["completed_at"]
            assert ce["type"] == "job.succeeded"
            if broker.kind == "nats":
                assert m.raw["subject"] == f"{broker.prefix}.job.succeeded"
                assert m.raw["headers"]["Nats-Msg-Id"] == str(seq)
            elif broker.kind == "redis":
                assert m.broker_id == f"{seq}-0" and m.raw["type"] == "job.succeeded" and m.raw["subject"] == job["id"]
            else:
                assert m.raw == {
                    "routing_key": "job.succeeded",
                    "content_type": "application/cloudevents+json",
                    "delivery_mode": 2,
                }
        assert listed["url"] == broker.url().replace("guest:guest@", "guest:***@") and listed["last_error"] is None
        assert listed["last_published_at"] is not None
        metrics = (await client.get("/metrics")).text
        assert f'receiver_sink_published_total{{sink="{broker.sink_name}"}} 40.0' in metrics
        assert f'receiver_sink_lag_events{{sink="{broker.sink_name}"}} 0.0' in metrics
        stats = (await api.get("/v1/stats")).json()
        assert [s["name"] for s in stats["sinks"]] == [broker.sink_name] and stats["sinks"][0]["state"] == "ok"
        doc = (await client.get("/asyncapi.json")).json()
        assert doc["asyncapi"] == "3.0.0" and len(doc["channels"]) == 1
        openapi = (await client.get("/openapi.json")).json()
        assert doc["components"]["schemas"]["JobOut"] == openapi["components"]["schemas"]["JobOut"]


async def _at_least(broker: TestBroker, n: int):
    got = await broker.messages()
    return got if len({m.event["id"] for m in got}) >= n else None


async def test_outage_then_complete_in_order(tmp_path: Path, broker: TestBroker) -> None:
    proxy = await TcpProxy("127.0.0.1", PORTS[broker.kind]).start()
    try:
        async with (
            serve_app(app_for(tmp_path, broker.url(proxy.port))) as server,
            server.client() as client,
            server.api() as api,
        ):
            await fire(client, "pix_out1", 30)
            await drained(api, broker.sink_name, 30)
            await proxy.cut()
            await fire(client, "pix_out2", 50)  # every webhook still answered while the broker is away
            failing = await eventually(lambda: _state(api, broker.sink_name, "failing"), 60, "sink failing")
            assert failing["last_error"] and failing["lag"] > 0
            await proxy.start()
            await fire(client, "pix_out3", 20)
            await drained(api, broker.sink_name, 100, timeout=90)
            got = await eventually(lambda: _at_least(broker, 100), 30, "100 messages")
            check_complete(got, list(range(1, 101)), duplicates_kept=broker.kind == "amqp")
    finally:
        await proxy.close()


async def _state(api: httpx.AsyncClient, name: str, state: str):
    s = await sink(api, name)
    return s if s["state"] == state else None


async def test_unreachable_at_start_is_failing_then_ok(tmp_path: Path, broker: TestBroker) -> None:
    proxy = TcpProxy("127.0.0.1", PORTS[broker.kind])  # not listening yet: the broker's address refuses connections
    try:
        async with (
            serve_app(app_for(tmp_path, broker.url(proxy.port))) as server,
            server.client() as client,
            server.api() as api,
        ):
            assert (await client.get("/readyz")).status_code == 200
            await fire(client, "pix_late", 10)
            failing = await eventually(lambda: _state(api, broker.sink_name, "failing"), 60, "sink failing")
            assert failing["lag"] == 10 and failing["last_event_id"] == 0 and failing["last_error"]
            await proxy.start()
            await drained(api, broker.sink_name, 10, timeout=90)  # the backoff is capped at 30 s
            check_complete(await _at_least(broker, 10), list(range(1, 11)), duplicates_kept=False)
    finally:
        await proxy.close()


async def test_frozen_broker_never_slows_webhooks(tmp_path: Path, broker: TestBroker) -> None:
    proxy = await TcpProxy("127.0.0.1", PORTS[broker.kind]).start()
    try:
        async with (
            serve_app(app_for(tmp_path, broker.url(proxy.port))) as server,
            server.client() as client,
            server.api() as api,
        ):
            await fire(client, "pix_fz1", 5)
            await drained(api, broker.sink_name, 5)
            proxy.freeze()
            # While the broker hangs, webhooks are answered and the event stream carries them.
            await fire(client, "pix_fz2", 60)
            assert sorted(await read_events(api, 5, 60)) == list(range(6, 66))
            assert (await sink(api, broker.sink_name))["last_event_id"] <= 5
            proxy.thaw()
            await drained(api, broker.sink_name, 65, timeout=120)
            check_complete(await _at_least(broker, 65), list(range(1, 66)), duplicates_kept=broker.kind == "amqp")
    finally:
        await proxy.close()


async def test_pause_resume_rewind(tmp_path: Path, broker: TestBroker) -> None:
    async with serve_app(app_for(tmp_path, broker.url())) as server, server.client() as client, server.api() as api:
        name = broker.sink_name
        await fire(client, "pix_pr1", 10)
        await drained(api, name, 10)
        r = await api.post(f"/v1/sinks/{name}/pause")
        assert r.status_code == 200 and r.json()["state"] == "paused"
        await fire(client, "pix_pr2", 10)
        await asyncio.sleep(1)  # give a publisher that ignored the pause the chance to publish
        paused = await sink(api, name)
        assert paused["state"] == "paused" and paused["last_event_id"] == 10 and paused["lag"] == 10
        assert len({m.event["id"] for m in await broker.messages()}) == 10
        r = await api.post(f"/v1/sinks/{name}/resume")
        assert r.status_code == 200 and r.json()["state"] == "ok"
        await drained(api, name, 20)
        # Rewind (a broker that lost data): events after 15 are published again, with their ids.
        r = await api.post(f"/v1/sinks/{name}/rewind", json={"last_event_id": 15})
        assert r.status_code == 200 and r.json()["last_event_id"] in range(15, 21)
        await drained(api, name, 20)
        if broker.kind == "amqp":  # no deduplication: the repeats arrive, with the same ids
            got = await eventually(lambda: _count_at_least(broker, 25), 30, "the rewound repeats")
            assert [m.event["id"] for m in got[20:]] == [str(i) for i in range(16, 21)]
        r = await api.post(f"/v1/sinks/{name}/rewind", json={"since": "2000-01-01T00:00:00Z"})
        assert r.status_code == 200 and r.json()["last_event_id"] == 0
        await drained(api, name, 20)
        assert (await api.post(f"/v1/sinks/{name}/rewind", json={"last_event_id": 999})).status_code == 409
        assert (await api.post(f"/v1/sinks/{name}/rewind", json={})).status_code == 422
        assert (await api.post(f"/v1/sinks/{name}/rewind", json={"since": "yesterday"})).status_code == 422
        assert (await api.post("/v1/sinks/nats:nope/pause")).status_code == 404
        assert (await client.post(f"/v1/sinks/{name}/pause")).status_code == 401
        check_complete(await broker.messages(), list(range(1, 21)), duplicates_kept=broker.kind == "amqp")


async def _count_at_least(broker: TestBroker, n: int):
    got = await broker.messages()
    return got if len(got) >= n else None


@pytest.mark.parametrize("kind", ["nats", "redis"])
async def test_refused_for_good_stops_the_sink(tmp_path: Path, kind: str) -> None:
    from tests.integration.sinks.brokers import require

    await require(kind)
    broker = TestBroker(kind)
    try:
        if kind == "nats":  # a stream that takes no message as large as an event
            import nats

            nc = await nats.connect("nats://127.0.0.1:4222")
            await nc.jetstream().add_stream(name=broker.name, subjects=[f"{broker.prefix}.>"], max_msg_size=64)
            await nc.close()
        else:  # a stream reused: it already holds ids above ours
            import redis.asyncio as aioredis

            client_r = aioredis.Redis()
            await client_r.xadd(broker.name, {"other": "data"}, id="1000000-0")
            await client_r.aclose()
        async with serve_app(app_for(tmp_path, broker.url())) as server, server.client() as client, server.api() as api:
            await fire(client, "pix_ref", 3)
            failing = await eventually(lambda: _state(api, broker.sink_name, "failing"), 60, "sink failing")
            assert "event 1 refused" in failing["last_error"] and failing["last_event_id"] == 0
            await asyncio.sleep(1)
            assert (await sink(api, broker.sink_name))["state"] == "failing"  # stopped, not skipped
            assert (await sink(api, broker.sink_name))["last_event_id"] == 0
    finally:
        await broker.cleanup()


async def test_redis_repeat_already_held_is_success(tmp_path: Path) -> None:
    """After a lost acknowledgement the stream may hold the event already: the same entry counts as published."""
    from tests.integration.sinks.brokers import require

    await require("redis")
    broker = TestBroker("redis")
    try:
        async with serve_app(app_for(tmp_path, broker.url())) as server, server.client() as client, server.api() as api:
            await fire(client, "pix_rep", 5)
            await drained(api, broker.sink_name, 5)
            assert (
                await api.post(f"/v1/sinks/{broker.sink_name}/rewind", json={"last_event_id": 0})
            ).status_code == 200
            await drained(api, broker.sink_name, 5)
            check_complete(await broker.messages(), list(range(1, 6)), duplicates_kept=False)
    finally:
        await broker.cleanup()


async def test_api_token_required_and_listing_hides_password(tmp_path: Path) -> None:
    url = "amqp://guest:s3cretpw@127.0.0.1:1/?exchange=hidden"
    async with serve_app(app_for(tmp_path, url)) as server, server.client() as client:
        assert (await client.get("/v1/sinks")).status_code == 401
        async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as api:
            listed = await eventually(lambda: _state(api, "amqp:hidden", "failing"), 60, "failing")
            assert listed["url"] == "amqp://guest:***@127.0.0.1:1/?exchange=hidden"
            body = (await api.get("/v1/sinks")).text + (await client.get("/asyncapi.json")).text
            assert "s3cretpw" not in body


async def test_redis_repeat_written_with_another_source_is_still_the_event(tmp_path: Path) -> None:
    """A replica with another public URL (or a changed one) repeats an event already in the stream: the same
    id, type and job is the same event, published; it does not stop the sink."""
    from tests.integration.sinks.brokers import require

    await require("redis")
    broker = TestBroker("redis")
    try:
        async with serve_app(app_for(tmp_path, broker.url())) as server, server.client() as client, server.api() as api:
            await fire(client, "pix_src", 3)
            await drained(api, broker.sink_name, 3)
        settings = make_settings(tmp_path, sinks=broker.url(), public_url="https://elsewhere.example")
        async with serve_app(create_app(settings)) as server, server.api() as api:
            assert (
                await api.post(f"/v1/sinks/{broker.sink_name}/rewind", json={"last_event_id": 0})
            ).status_code == 200
            await drained(api, broker.sink_name, 3)
            assert (await sink(api, broker.sink_name))["state"] == "ok"
        got = await broker.messages()
        assert [m.broker_id for m in got] == ["1-0", "2-0", "3-0"] and {m.event["source"] for m in got} == {PUBLIC}
    finally:
        await broker.cleanup()
