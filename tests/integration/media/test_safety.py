"""Provider bytes are hostile: an SVG carrying script is not mirrored, and whatever /media/ serves cannot
run script on the receiver's origin (a sandboxing CSP, nosniff, a download for anything not raster)."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.fakes.callback import callback_server
from tests.fakes.origin import SVG_WITH_SCRIPT, media_origin
from tests.integration.api.test_inspector import Browser, expect
from tests.integration.media.support import callback_for, deliver, mirroring_receiver
from tests.support import API_TOKEN, RunningServer

SVG_URI = "data:image/svg+xml;base64," + base64.b64encode(SVG_WITH_SCRIPT).decode()


def assert_guarded(reply: httpx.Response) -> None:
    csp = reply.headers["content-security-policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp and "script" not in csp, csp
    assert reply.headers["x-content-type-options"] == "nosniff"


async def stored_as(server: RunningServer, tmp_path: Path, data: bytes, content_type: str) -> str:
    """An object in the media store under `content_type`, as one stored before the allow-list would be."""
    media = server.runtime.media

    async def pieces() -> AsyncIterator[bytes]:
        yield data

    stored = await media.objects.put(pieces(), content_type=content_type)
    with contextlib.closing(sqlite3.connect(tmp_path / "receiver.db")) as db, db:
        db.execute(
            "INSERT INTO media (sha256, size, content_type, created_at) VALUES (?, ?, ?, ?)",
            (stored.sha256, stored.size, content_type, time.time()),
        )
    return str(media.stored_url(stored.sha256))


async def test_svg_and_other_non_raster_images_are_not_mirrored(tmp_path: Path) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback) as server,
    ):
        job_id = await deliver(server, "px-svg", SVG_URI, origin.url("/svg"), origin.url("/img/1000"))
        svg_uri, svg_url, png = (await callback_for(callback, job_id))["data"]["outputs"]
        for refused in (svg_uri, svg_url):
            assert refused["stored_url"] is None and refused["sha256"] is None
            assert "image/svg+xml" in refused["mirror_error"] and "only raster images" in refused["mirror_error"]
            assert "gave up after" not in refused["mirror_error"]  # permanent: not retried
        assert origin.hits["/svg"] == 1
        assert png["stored_url"] and png["mirror_error"] is None
        assert [p.name for p in (tmp_path / "media" / "objects").iterdir()] == [png["sha256"]]


async def test_every_media_answer_forbids_script_and_only_raster_is_inline(tmp_path: Path) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback) as server,
    ):
        job_id = await deliver(server, "px-hdr", origin.url("/img/1000"), origin.url("/octet"))
        png, octet = (await callback_for(callback, job_id))["data"]["outputs"]
        legacy = await stored_as(server, tmp_path, SVG_WITH_SCRIPT, "image/svg+xml")
        async with httpx.AsyncClient(timeout=10) as client:
            for method in ("GET", "HEAD"):
                shown = await client.request(method, png["stored_url"])
                assert shown.status_code == 200 and shown.headers["content-disposition"] == "inline"
                assert_guarded(shown)
                for url in (octet["stored_url"], legacy):
                    download = await client.request(method, url)
                    assert download.status_code == 200
                    assert download.headers["content-disposition"].startswith("attachment"), url
                    assert_guarded(download)
            assert_guarded(await client.get(png["stored_url"], headers={"If-None-Match": png["stored_url"]}))
            assert_guarded(await client.get(png["stored_url"], headers={"Range": "bytes=5000-"}))
            missing = await client.get(f"{server.base_url}/media/x/{'0' * 64}")
            assert missing.status_code == 404
            assert_guarded(missing)


async def test_an_svg_output_cannot_run_script_on_the_receiver_origin(tmp_path: Path, browser: Browser) -> None:
    page = browser.page
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback) as server,
    ):
        await page.goto(f"{server.base_url}/ui/")
        await browser.sign_in(server.base_url)
        job_id = await deliver(server, "px-svg-ui", SVG_URI, origin.url("/svg"))
        outputs = (await callback_for(callback, job_id))["data"]["outputs"]
        assert all(o["stored_url"] is None for o in outputs)
        # The inspector shows the job; an http output links out in a new tab that cannot reach this one.
        await page.goto(f"{server.base_url}/ui/#/jobs/{job_id}")
        link = page.locator(f'figure a[href="{origin.url("/svg")}"]')
        await expect(link).to_have_attribute("target", "_blank")
        await expect(link).to_have_attribute("rel", "noopener noreferrer")
        # An SVG already in the store (stored before the allow-list) opened at its /media/ URL, in the tab
        # holding the token: a download, not a document of this origin.
        legacy = await stored_as(server, tmp_path, SVG_WITH_SCRIPT, "image/svg+xml")
        from playwright.async_api import Error as PlaywrightError

        async with page.expect_download() as download:
            with contextlib.suppress(PlaywrightError):  # "Download is starting": no page was loaded
                await page.goto(legacy)
        assert (await download.value).url == legacy
        assert await page.evaluate("sessionStorage.getItem('receiver.apiToken')") == API_TOKEN
        assert await page.title() != "pwned" and page.url.startswith(f"{server.base_url}/ui/")
        leaks = [r.url for r in browser.requests if urlsplit(r.url).path == "/leak"]
        assert leaks == []
