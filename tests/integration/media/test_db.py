"""Mirrored objects kept in the store's database (RECEIVER_MEDIA_URL=db, the default with PostgreSQL),
and objects whose bytes are gone: 404 to GET and HEAD alike, never a 5xx, on every backend."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

import httpx
import pytest

from receiver.media.db import CHUNK
from receiver.media.mirror import sweep
from receiver.media.service import media_target
from tests.fakes.callback import callback_server
from tests.fakes.origin import CHUNK as ORIGIN_CHUNK
from tests.fakes.origin import image_bytes, media_origin
from tests.integration.media.support import callback_for, deliver, get, mirroring_receiver
from tests.support import make_settings

BIG = 2 * CHUNK + 1234  # three chunks, the last one short


def big_bytes(n: int) -> bytes:
    """What the origin's /big/<n> sends."""
    block = image_bytes(ORIGIN_CHUNK, "big")
    return (block * (n // len(block) + 1))[:n]


def test_unset_media_url_is_the_database_with_postgresql_and_a_directory_with_sqlite(tmp_path: Path) -> None:
    assert media_target(make_settings(tmp_path, database_url="postgresql://u@h/db", media_url=None)).kind == "db"
    assert media_target(make_settings(tmp_path, database_url="postgres://u@h/db", media_url=None)).kind == "db"
    local = media_target(make_settings(tmp_path, media_url=None))
    assert local.kind == "local" and local.path.endswith("receiver-media")
    assert media_target(make_settings(tmp_path, database_url="postgresql://u@h/db", media_url="/srv/m")).kind == "local"
    assert media_target(make_settings(tmp_path, media_url="db")).kind == "db"


async def test_objects_in_the_database_are_served_in_ranges_and_expire(tmp_path: Path, store_url: str) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback, database_url=store_url, media_url="db") as server,
    ):
        assert server.runtime.media.target.kind == "db"
        job_id = await deliver(server, "px-db", origin.url(f"/big/{BIG}"), origin.url("/img/1000-s"))
        big, small = (await callback_for(callback, job_id))["data"]["outputs"]
        data = big_bytes(BIG)
        assert big["bytes"] == BIG and big["sha256"] == hashlib.sha256(data).hexdigest() and big["mirror_error"] is None
        whole = await get(big["stored_url"])
        assert whole.status_code == 200 and whole.content == data and whole.headers["content-length"] == str(BIG)
        for first, last in ((CHUNK - 10, CHUNK + 9), (0, 0), (2 * CHUNK, BIG - 1), (5, 2 * CHUNK + 5)):
            part = await get(big["stored_url"], headers={"Range": f"bytes={first}-{last}"})
            assert part.status_code == 206 and part.content == data[first : last + 1], (first, last)
            assert part.headers["content-range"] == f"bytes {first}-{last}/{BIG}"
        assert (await get(small["stored_url"])).content == image_bytes(1000, "s")
        async with httpx.AsyncClient(timeout=10) as client:
            head = await client.head(big["stored_url"])
            assert head.status_code == 200 and head.headers["content-length"] == str(BIG)
            assert (
                await client.get(big["stored_url"], headers={"If-None-Match": head.headers["etag"]})
            ).status_code == 304
        assert not (tmp_path / "media").exists() and not Path("receiver-media").exists()

        # An upload a crash cut short (never named) is deleted by the sweep; named objects stay.
        store = server.runtime.store
        await store.put_media_chunk("cut-short", 0, b"x" * 100)
        assert await server.runtime.media.objects.forget_incoming(older_than=store.clock() + 1) == 1
        assert (await get(big["stored_url"])).content == data
        # Past the retention (the sweep run at once rather than waited for): 410, and the chunks go.
        removed = await sweep(server.runtime, server.runtime.media, before=server.runtime.store.clock() + 1)
        assert removed == 2
        async with httpx.AsyncClient(timeout=10) as client:
            for output in (big, small):
                assert (await client.get(output["stored_url"])).status_code == 410
                assert (await client.head(output["stored_url"])).status_code == 410
                assert await server.runtime.store.media_chunk(f"objects/{output['sha256']}", 0) is None


@pytest.mark.parametrize("media", ["dir", "db"])
async def test_an_object_whose_bytes_are_gone_is_404_to_get_and_head(tmp_path: Path, media: str) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback, media_url=str(tmp_path / "media") if media == "dir" else "db") as server,
    ):
        job_id = await deliver(server, "px-gone", origin.url("/img/1000-g"))
        output = (await callback_for(callback, job_id))["data"]["outputs"][0]
        assert (await get(output["stored_url"])).status_code == 200
        # As on another replica's disk, or after a redeploy: the media table has it, the bytes are not there.
        await server.runtime.media.objects.delete(output["sha256"])
        async with httpx.AsyncClient(timeout=10) as client:
            for reply in (
                await client.get(output["stored_url"]),
                await client.head(output["stored_url"]),
                await client.get(output["stored_url"], headers={"Range": "bytes=0-9"}),
                await client.get(output["stored_url"], headers={"If-None-Match": f'"{output["sha256"]}"'}),
            ):
                assert reply.status_code == 404, (reply.request.method, reply.status_code)


async def test_replicas_with_no_shared_disk_serve_each_others_outputs_by_default(
    tmp_path: Path,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The PaaS case: two replicas (or a deploy and the next), each with its own disk; media unset."""
    caplog.set_level(logging.WARNING, logger="receiver.media.service")
    async with media_origin() as origin, callback_server() as callback, contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            mirroring_receiver(tmp_path / "a", callback, database_url=postgres_url, media_url=None)
        )
        second = await stack.enter_async_context(
            mirroring_receiver(tmp_path / "b", callback, database_url=postgres_url, media_url=None)
        )
        job_id = await deliver(first, "px-paas", *(origin.url(f"/img/{1000 + i}-p") for i in range(4)))
        outputs = (await callback_for(callback, job_id))["data"]["outputs"]
        assert all(o["stored_url"] and o["mirror_error"] is None for o in outputs)
        for output in outputs:
            path = output["stored_url"].removeprefix(first.base_url).removeprefix(second.base_url)
            for replica in (first, second):
                served = await get(f"{replica.base_url}{path}")
                assert served.status_code == 200 and hashlib.sha256(served.content).hexdigest() == output["sha256"]
        await stack.aclose()
        third = await stack.enter_async_context(  # the next deploy: a fresh disk
            mirroring_receiver(tmp_path / "c", callback, database_url=postgres_url, media_url=None)
        )
        path = outputs[0]["stored_url"].removeprefix(first.base_url).removeprefix(second.base_url)
        assert (await get(f"{third.base_url}{path}")).status_code == 200
    assert not any("local directory" in r.getMessage() for r in caplog.records)
