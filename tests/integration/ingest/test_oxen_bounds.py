"""Oxen's stream is read with a cap per line and per event: an oversized one is kept (its start) as an
`invalid` receipt and the connection is renewed; the stream then works as before."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from receiver.tuning import StreamTuning
from receiver.util.bounded_sse import BoundedSSE, Oversized
from tests.fakes.harness import serve_receiver, wait_job
from tests.fakes.oxen import API_KEY, COMPLETED, FAST_TUNING, FakeOxen
from tests.support import RunningServer, eventually

CHUNK = "x" * 65536
KEPT = StreamTuning().kept_chars  # FAST_TUNING keeps the production caps


async def invalid_receipts(server: RunningServer) -> list[dict[str, Any]]:
    async with server.api() as api:
        reply = await api.get("/v1/receipts", params={"provider": "oxen", "outcome": "invalid"})
    return list(reply.json()["receipts"])


def body_of(receipt: dict[str, Any]) -> bytes:
    return base64.b64decode(receipt["body_base64"]) if "body_base64" in receipt else receipt["body"].encode()


async def still_works(server: RunningServer, fake: FakeOxen) -> None:
    generation_id = fake.submit()
    async with server.api() as api:
        job = (await api.post("/v1/jobs", json={"provider": "oxen", "provider_job_id": generation_id})).json()
    await eventually(lambda: fake.live_streams, 10, "a live stream")
    fake.complete(generation_id)
    assert (await wait_job(server, job["id"], timeout=10))["status"] == "succeeded"


@pytest.mark.parametrize("shape", ["endless line", "endless event"])
async def test_an_oversized_line_or_event_is_cut_kept_short_and_the_stream_renewed(
    tmp_path: Path, fake_oxen: FakeOxen, shape: str
) -> None:
    async with serve_receiver(
        tmp_path, stream_tuning=FAST_TUNING, oxen_api_key=API_KEY, oxen_base_url=fake_oxen.base_url
    ) as server:
        await fake_oxen.wait_connections(1)
        fake_oxen.send_raw(f"event: {COMPLETED}\ndata: ")
        for _ in range(48):  # 3 MiB, three times the cap
            fake_oxen.send_raw(CHUNK if shape == "endless line" else CHUNK + "\ndata: ")
        await eventually(lambda: invalid_receipts(server), 15, "the oversized message kept")
        (receipt,) = await invalid_receipts(server)
        assert receipt["source"] == "stream" and "exceeds" in receipt["error"]
        kept = body_of(receipt)
        assert len(kept) == KEPT and set(kept.removeprefix(b"data: ")) <= set(b"x\n")
        await fake_oxen.wait_connections(2)
        await still_works(server, fake_oxen)


def test_the_bounded_decoder_reads_events_like_httpx_sse() -> None:
    decoder = BoundedSSE(max_line=100, max_event=150, keep=10)
    events = decoder.feed(b': keep-alive\r\n\r\nevent: done\r\ndata: {"a": 1}\r\ndata: 2\r')
    assert events == []
    (sse,) = decoder.feed(b"\n\r\nevent: x\ndata: \xff\n\n")[:1]
    assert (sse.event, sse.data) == ("done", '{"a": 1}\n2')
    with pytest.raises(Oversized) as line:
        decoder.feed(b"data: " + b"y" * 200)
    assert line.value.kept == b"data: yyyy"
    decoder = BoundedSSE(max_line=100, max_event=150, keep=10)
    with pytest.raises(Oversized) as event:
        decoder.feed(b"event: e\n" + b"data: " + b"z" * 90 + b"\n" + b"data: " + b"z" * 90 + b"\n")
    assert event.value.kept == b"z" * 10 and event.value.event == "e"
