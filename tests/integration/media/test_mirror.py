"""Media mirroring end to end on a local directory: webhook → mirrored → callback with stored_url →
the stored URL serves the bytes (Range, HEAD, bad signatures, retention); misbehaving origins give up."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from tests.fakes.callback import callback_server
from tests.fakes.origin import image_bytes, media_origin
from tests.integration.media.support import callback_for, deliver, get, mirroring_receiver
from tests.support import API_TOKEN, eventually


async def test_outputs_are_mirrored_before_the_callback_and_served(tmp_path: Path) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback) as server,
    ):
        job_id = await deliver(
            server, "px-m1", origin.url("/img/5000-a"), origin.url("/img/7000-b"), media_type="image/png"
        )
        body = await callback_for(callback, job_id)
        outputs = body["data"]["outputs"]
        for output, (n, seed) in zip(outputs, ((5000, "a"), (7000, "b"))):
            expected = image_bytes(n, seed)
            assert output["sha256"] == hashlib.sha256(expected).hexdigest() and output["bytes"] == n
            assert output["mirror_error"] is None and output["media_type"] == "image/png"
            assert output["stored_url"].startswith(f"{server.base_url}/media/")
            got = await get(output["stored_url"])
            assert got.status_code == 200 and got.content == expected
            assert got.headers["content-type"] == "image/png" and got.headers["content-length"] == str(n)
            assert got.headers["etag"] == f'"{output["sha256"]}"'
            assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
        url = outputs[0]["stored_url"]
        part = await get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == image_bytes(5000, "a")[10:20]
        assert part.headers["content-range"] == "bytes 10-19/5000" and part.headers["content-length"] == "10"
        tail = await get(url, headers={"Range": "bytes=-100"})
        assert tail.status_code == 206 and tail.content == image_bytes(5000, "a")[-100:]
        beyond = await get(url, headers={"Range": "bytes=5000-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == "bytes */5000"
        async with httpx.AsyncClient(timeout=10) as client:
            head = await client.head(url)
            assert head.status_code == 200 and head.headers["content-length"] == "5000" and head.content == b""
            cached = await client.get(url, headers={"If-None-Match": head.headers["etag"]})
            assert cached.status_code == 304
        # The stored URL is the only credential: anything else under /media/ is 404.
        sig, sha = url.rsplit("/", 2)[-2:]
        forged = sig[:-1] + ("A" if sig[-1] != "A" else "B")
        for bad in (f"/media/{forged}/{sha}", f"/media/{sha}", f"/media/{sig}/{'0' * 64}", "/media/", "/media/x/y/z"):
            assert (await get(f"{server.base_url}{bad}")).status_code == 404, bad
        # The job and the event carry the same outputs.
        async with server.api() as api:
            job = (await api.get(f"/v1/jobs/{job_id}")).json()
            assert job["outputs"] == outputs and job["status"] == "succeeded"
            async with api.stream("GET", "/v1/events", params={"last_event_id": "0"}) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        assert json.loads(line[5:])["outputs"] == outputs
                        break
        assert len(callback.requests) == 1  # one callback, sent once mirrored
        metrics = (await get(f"{server.base_url}/metrics")).text
        assert 'receiver_media_mirrors_total{outcome="stored"} 2.0' in metrics
        files = list((tmp_path / "media" / "objects").iterdir())
        assert sorted(f.name for f in files) == sorted(o["sha256"] for o in outputs)


async def test_same_bytes_are_stored_once_and_data_uris_are_decoded(tmp_path: Path) -> None:
    data = image_bytes(3000, "d")
    uri = "data:image/webp;base64," + base64.b64encode(data).decode()
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback) as server,
    ):
        first = await deliver(server, "px-d1", origin.url("/img/3000-d"))
        second = await deliver(server, "px-d2", uri)
        a = (await callback_for(callback, first))["data"]["outputs"][0]
        b = (await callback_for(callback, second))["data"]["outputs"][0]
        assert a["sha256"] == b["sha256"] == hashlib.sha256(data).hexdigest() and a["stored_url"] == b["stored_url"]
        assert len(list((tmp_path / "media" / "objects").iterdir())) == 1
        assert (await get(b["stored_url"])).content == data


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/html", "text/html"),
        ("/chunked/5000", "larger than 4000 bytes"),
        ("/big/5000", "larger than 4000 bytes"),
        ("/loop", "more than 5 redirects"),
        ("/redirect?to=http%3A%2F%2F0.0.0.0%3A9%2Fx", "refused destination"),
        ("/redirect?to=file%3A%2F%2F%2Fetc%2Fpasswd", "only http(s)"),
        ("/status/404", "answered 404"),
        ("/status/503", "answered 503"),
        ("/trickle", "longer than 1.5 s"),
        ("/liar", "Content-Length"),
    ],
)
async def test_misbehaving_origins_give_up_and_the_callback_still_goes(
    tmp_path: Path,
    path: str,
    why: str,
) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback, media_max_bytes=4000) as server,
    ):
        job_id = await deliver(server, "px-bad", origin.url(path), origin.url("/img/1000"))
        bad, good = (await callback_for(callback, job_id))["data"]["outputs"]
        assert why in (bad["mirror_error"] or ""), bad
        assert bad["stored_url"] is None and bad["sha256"] is None and bad["bytes"] is None
        assert good["stored_url"] and good["mirror_error"] is None
        assert "gave up after" in bad["mirror_error"] or path not in ("/status/503", "/trickle", "/liar")
        assert not list((tmp_path / "media" / "incoming").iterdir())  # nothing half-written left behind


async def test_transient_failures_are_retried(tmp_path: Path) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback) as server,
    ):
        job_id = await deliver(
            server, "px-flaky", origin.url("/flaky/2"), origin.url("/octet"), media_type="image/jpeg"
        )
        flaky, octet = (await callback_for(callback, job_id))["data"]["outputs"]
        assert flaky["bytes"] == 2000 and flaky["mirror_error"] is None and origin.hits["/flaky/2"] == 3
        assert octet["bytes"] == 3000 and octet["mirror_error"] is None
        assert (await get(octet["stored_url"])).headers["content-type"] == "image/jpeg"  # the provider's type


async def test_loopback_origins_are_refused_unless_allowed(tmp_path: Path) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback, media_allow_private=False) as server,
    ):
        by_name = origin.url("/img/100").replace("127.0.0.1", "localhost")
        job_id = await deliver(server, "px-private", origin.url("/img/100"), by_name)
        outputs = (await callback_for(callback, job_id))["data"]["outputs"]
        for output in outputs:
            assert "refused destination" in output["mirror_error"] and output["stored_url"] is None
        assert sum(origin.hits.values()) == 0  # never connected


async def test_retention_sweep_deletes_objects_and_their_urls_answer_410(tmp_path: Path) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback, media_retention_days=1.5 / 86400) as server,
    ):
        job_id = await deliver(server, "px-old", origin.url("/img/1000"))
        url = (await callback_for(callback, job_id))["data"]["outputs"][0]["stored_url"]

        async def gone() -> bool:
            return (await get(url)).status_code == 410

        await eventually(gone, 20, "the object to expire")
        # Marked gone first, then removed: the file follows shortly.
        await eventually(lambda: not list((tmp_path / "media" / "objects").iterdir()), 10, "the file to be removed")


async def test_mirroring_off_serves_no_media_and_calls_back_at_once(tmp_path: Path) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback, media_url="off") as server,
    ):
        job_id = await deliver(server, "px-off", origin.url("/img/100"), media_type="image/png")
        output = (await callback_for(callback, job_id))["data"]["outputs"][0]
        assert output == {
            "url": origin.url("/img/100"),
            "media_type": "image/png",
            "stored_url": None,
            "sha256": None,
            "bytes": None,
            "mirror_error": None,
        }
        assert sum(origin.hits.values()) == 0 and not (tmp_path / "media").exists()
        assert (await get(f"{server.base_url}/media/x/y")).status_code == 404


async def test_long_poll_sees_the_job_succeeded_before_its_mirror(tmp_path: Path) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback) as server,
    ):
        job_id = await deliver(server, "px-lp", origin.url("/trickle"))
        async with server.api() as api:
            job = (await api.get(f"/v1/jobs/{job_id}", params={"wait": "5"})).json()
        assert job["status"] == "succeeded" and job["outputs"][0]["stored_url"] is None
        assert job["outputs"][0]["mirror_error"] is None and callback.requests == []
        await callback_for(callback, job_id)
        assert API_TOKEN  # the API needs its token as ever


async def test_a_local_directory_with_postgresql_warns_at_start(
    tmp_path: Path,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from receiver.app import open_runtime
    from tests.support import make_settings

    settings = make_settings(tmp_path, database_url=postgres_url, media_url=str(tmp_path / "media"))
    with caplog.at_level("WARNING", logger="receiver.media.service"):
        runtime = await open_runtime(settings)
        await runtime.close()
    assert any(
        "other replicas cannot serve these files" in r.getMessage() and "next deploy" in r.getMessage()
        for r in caplog.records
    )
    assert runtime.media is not None and runtime.store.mirroring


async def test_tasks_queued_while_mirroring_was_on_settle_when_it_is_off(tmp_path: Path) -> None:
    from receiver.models import Completion, JobStatus, Output, Receipt
    from receiver.store import open_store

    store = await open_store(f"sqlite:///{tmp_path / 'receiver.db'}", mirroring=True)
    result = await store.apply(
        Receipt("pixazo", "webhook", b"{}"),
        [Completion("pixazo", "px-was-on", JobStatus.SUCCEEDED, (Output("https://x.test/a.png"),))],
    )
    await store.close()
    async with callback_server() as callback, mirroring_receiver(tmp_path, callback, media_url="off"):
        output = (await callback_for(callback, result.job_ids[0]))["data"]["outputs"][0]
        assert output["mirror_error"] == "mirroring is off (RECEIVER_MEDIA_URL)" and output["stored_url"] is None


async def test_uploads_cut_short_are_cleaned_up(tmp_path: Path) -> None:
    import os
    import time

    from receiver.media.objects import MediaObjects
    from receiver.media.target import parse_media_url

    objects = MediaObjects(parse_media_url(str(tmp_path / "m")))
    (tmp_path / "m" / "incoming").mkdir()
    stale, fresh = tmp_path / "m" / "incoming" / "stale", tmp_path / "m" / "incoming" / "fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert await objects.forget_incoming(older_than=time.time() - 3600) == 1
    assert not stale.exists() and fresh.exists()


async def test_two_postgresql_replicas_mirror_each_output_once_and_both_serve_it(
    tmp_path: Path,
    postgres_url: str,
) -> None:
    import contextlib

    shared = {"database_url": postgres_url, "media_url": str(tmp_path / "shared-media")}
    async with media_origin() as origin, callback_server() as callback, contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(mirroring_receiver(tmp_path / "a", callback, **shared))
        second = await stack.enter_async_context(mirroring_receiver(tmp_path / "b", callback, **shared))
        urls = [origin.url(f"/img/{1000 + i}-r") for i in range(8)]
        job_id = await deliver(first, "px-replicas", *urls)
        outputs = (await callback_for(callback, job_id))["data"]["outputs"]
        assert all(o["stored_url"] for o in outputs) and len(callback.requests) == 1
        assert all(origin.hits[u.removeprefix(f"http://127.0.0.1:{origin.port}")] == 1 for u in urls)  # once each
        for output in outputs:
            # Either replica may have mirrored it (its URL names that one): the other serves it too.
            path = output["stored_url"].removeprefix(first.base_url).removeprefix(second.base_url)
            assert path.startswith("/media/"), output["stored_url"]
            for replica in (first, second):  # the same key and files on every replica
                served = await get(f"{replica.base_url}{path}")
                assert served.status_code == 200 and len(served.content) == output["bytes"]
