"""The Inspector at /ui/, driven in a real Chromium through Playwright, against real loopback servers.

Browser tests skip (with the reason) when Playwright or Chromium is missing, unless
RECEIVER_REQUIRE_BROWSER=1 (CI), which turns that into a failure. RECEIVER_SCREENSHOT=docs/inspector.png
writes screenshots of the page with the tests' data (…png for the lists, …-job.png for a job).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from receiver.app import create_app
from receiver.tuning import MirrorTuning
from tests.fakes.callback import HANG, Reply, callback_server
from tests.fakes.images import fake_cdn
from tests.fakes.origin import media_origin
from tests.integration.media.support import mirroring_receiver
from tests.support import API_TOKEN, WEBHOOK_TOKEN, RunningServer, eventually, make_settings, serve_app, webhook_path

CHROMIUM = os.environ.get("RECEIVER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SOON_MS = 10_000  # generous: the page polls every second, a busy machine may be slow


def pixazo_done(request_id: str, *urls: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "status": "COMPLETED",
        "model_id": "grok-imagine-image",
        # By default a loopback URL nothing listens on: a page showing it never leaves the machine.
        "output": {
            "media_url": list(urls) or [f"http://127.0.0.1:9/{request_id}/output.jpeg"],
            "media_type": "image/png" if urls else "image/jpeg",
        },
    }


# ---- the browser ----------------------------------------------------------------------------


@dataclass
class Browser:
    page: Any
    requests: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught script errors and CSP violations

    async def sign_in(self, base_url: str, token: str = API_TOKEN) -> None:
        if not self.page.url.startswith(base_url):
            await self.page.goto(f"{base_url}/ui/")
        await self.page.get_by_label("API token").fill(token)
        await self.page.get_by_label("API token").press("Enter")  # keyboard, the form's submit

    async def assert_clean(self, token: str = API_TOKEN) -> None:
        """No script error; nothing went to another host, no URL carries a secret, every /v1 call has the header."""
        assert self.errors == []
        assert self.requests
        for request in self.requests:
            url = urlsplit(request.url)
            if url.scheme == "data":
                continue
            assert (url.scheme, url.hostname) == ("http", "127.0.0.1"), request.url
            assert token not in request.url and API_TOKEN not in request.url and WEBHOOK_TOKEN not in request.url
            if url.path.startswith("/v1/"):
                headers = await request.all_headers()
                assert headers.get("authorization") == f"Bearer {token}", request.url
                assert "cookie" not in headers

    async def screenshot(self, suffix: str = "") -> None:
        target = os.environ.get("RECEIVER_SCREENSHOT")
        if target:
            path = Path(target)
            await self.page.screenshot(path=str(path.with_stem(path.stem + suffix)), full_page=True)


def _browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("RECEIVER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{missing}, and RECEIVER_REQUIRE_BROWSER=1")
        pytest.skip(missing)
    from playwright.async_api import async_playwright
    from playwright.async_api import expect as playwright_expect

    playwright_expect.set_options(timeout=SOON_MS)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await chromium.new_context(viewport={"width": 1360, "height": 900})
            context.set_default_timeout(SOON_MS)
            page = await context.new_page()
            found = Browser(page)
            page.on("request", lambda request: found.requests.append(request))
            page.on("pageerror", lambda exc: found.errors.append(str(exc)))
            page.on(
                "console",
                lambda msg: (
                    found.errors.append(msg.text)
                    if msg.type == "error" and "Content Security Policy" in msg.text
                    else None
                ),
            )
            yield found
        finally:
            await chromium.close()


def expect(locator: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(locator)


# ---- without a browser ----------------------------------------------------------------------


async def test_ui_is_served_with_a_strict_content_security_policy(server: RunningServer) -> None:
    async with server.client() as client:
        page = await client.get("/ui/")
        script = await client.get("/ui/app.js")
        missing = await client.get("/ui/nothing-here.js")
    assert page.status_code == 200 and 'for="token"' in page.text and "API token" in page.text
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for reply in (page, script, missing):
        csp = reply.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp and reply.headers["referrer-policy"] == "no-referrer"
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert "http://" not in page.text and "https://" not in page.text  # nothing from another host


async def test_stats_needs_the_token_and_shows_jobs_and_backlog(tmp_path: Path) -> None:
    async with callback_server(HANG) as callback:
        async with serve_app(create_app(make_settings(tmp_path))) as server:
            async with server.client() as client, server.api() as api:
                assert (await client.get("/v1/stats")).status_code == 401
                unknown = await api.get("/v1/stats", params={"verbose": "1"})
                assert unknown.status_code == 422 and "verbose" in unknown.text
                empty = (await api.get("/v1/stats")).json()
                assert empty["store"] == f"SQLite file {tmp_path / 'receiver.db'}"
                assert empty["jobs"] == {} and empty["delivery_backlog"] == {"count": 0, "oldest_age_s": None}
                await api.post(
                    "/v1/jobs", json={"provider": "pixazo", "provider_job_id": "px-s", "callback_url": callback.url()}
                )
                await api.post("/v1/jobs", json={"provider": "pixazo", "provider_job_id": "px-t"})
                await client.post(webhook_path("pixazo"), json=pixazo_done("px-s"))
                await eventually(lambda: len(callback.requests) == 1)  # held open: the message stays pending
                stats = (await api.get("/v1/stats")).json()
            assert stats["jobs"] == {"pending": 1, "succeeded": 1}
            assert stats["delivery_backlog"]["count"] == 1 and stats["delivery_backlog"]["oldest_age_s"] >= 0
            callback.release()


# ---- in the browser -------------------------------------------------------------------------


async def test_sign_in_refuses_a_wrong_token_and_keeps_the_token_in_the_tab(
    server: RunningServer, browser: Browser
) -> None:
    page = browser.page
    async with server.client() as client:
        await client.post(webhook_path("pixazo"), json=pixazo_done("px-secret"))
    response = await page.goto(f"{server.base_url}/ui/")
    assert "default-src 'self'" in response.headers["content-security-policy"]

    await browser.sign_in(server.base_url, "not-the-token")
    await expect(page.locator("#signin-error")).to_contain_text("refused")
    await expect(page.locator("#app")).to_be_hidden()
    assert await page.locator("#job-list tbody tr").count() == 0
    assert await page.evaluate("sessionStorage.length") == 0
    assert "px-secret" not in await page.content()
    await browser.assert_clean(token="not-the-token")
    browser.requests.clear()

    await browser.sign_in(server.base_url)
    await expect(page.locator("#job-list tbody tr")).to_have_count(1)
    await expect(page.locator("#signin-error")).to_be_hidden()
    await expect(page.locator("#g-store")).to_contain_text("ok SQLite file")
    await expect(page.locator("#g-oxen")).to_contain_text("disabled")
    await expect(page.locator("#g-backlog")).to_contain_text("0 waiting")
    await expect(page.get_by_role("link", name="Metrics")).to_have_attribute("href", "/metrics")
    assert await page.evaluate("sessionStorage.getItem('receiver.apiToken')") == API_TOKEN
    assert await page.evaluate("document.cookie") == ""
    assert API_TOKEN not in page.url

    await page.reload()  # the token lives as long as the tab
    await expect(page.locator("#job-list tbody tr")).to_have_count(1)

    await page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.locator("#job-list a").first.click()
    await expect(page.locator("#job-fields")).to_contain_text("px-secret")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await page.go_back()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API token")).to_be_visible()
    assert await page.locator("#job-list tbody tr").count() == 0
    assert await page.evaluate("sessionStorage.length") == 0
    await browser.assert_clean()


async def test_new_messages_show_without_reload_and_filters_narrow(server: RunningServer, browser: Browser) -> None:
    page = browser.page
    jobs = page.locator("#job-list tbody tr")
    receipts = page.locator("#receipt-list details")
    await browser.sign_in(server.base_url)
    await expect(page.locator("#jobs-note")).to_have_text("No jobs yet.")

    async with server.client() as client, server.api() as api:
        pending = (
            await api.post(
                "/v1/jobs",
                json={
                    "provider": "apiframe",
                    "provider_job_id": "af-wait",
                    "metadata": {"prompt": "a lighthouse at dusk"},
                },
            )
        ).json()
        first = (await client.post(webhook_path("pixazo"), json=pixazo_done("px-one"))).json()
        await client.post(webhook_path("pixazo"), json=pixazo_done("px-two"))
        await client.post(
            webhook_path("apiframe"),
            json={"event": "progress", "jobId": "af-wait", "status": "PROCESSING", "progress": 45},
        )
        await client.post(
            webhook_path("runware"),
            json={
                "data": [
                    {
                        "taskType": "imageInference",
                        "taskUUID": "7d1c5a0e-2f7b-4a8e-9c1d-3b6f0e2a9c44",
                        "imageUUID": "img-1",
                        "imageURL": "https://im.runware.ai/image/img-1.jpg",
                        "cost": 0.0013,
                    }
                ]
            },
        )
        await client.post(webhook_path("pixazo"), content=b'{"request_id": "px-bad", "status": 5}')
    await expect(jobs).to_have_count(4)
    await expect(receipts).to_have_count(5)
    await expect(page.locator("#job-list")).to_contain_text("px-two")
    runware = receipts.filter(has_text="runware")
    await runware.locator("summary").click()
    await expect(runware.locator("pre").first).to_contain_text('"imageUUID": "img-1",')
    await browser.screenshot()

    search = page.get_by_label("Search by job id or provider job id")
    await search.fill("px-two")
    await expect(jobs).to_have_count(1)
    await expect(jobs.first).to_contain_text("px-two")
    await search.fill(first["job_ids"][0])
    await expect(jobs).to_have_count(1)
    await expect(jobs.first).to_contain_text("px-one")
    await search.fill("no-such-job")
    await expect(jobs).to_have_count(0)
    await expect(page.locator("#jobs-note")).to_contain_text("No job")
    await search.fill("")
    await expect(jobs).to_have_count(4)

    await page.get_by_label("Job status").select_option("pending")
    await expect(jobs).to_have_count(1)
    await expect(jobs.first).to_contain_text(pending["id"])
    await page.get_by_label("Job status").select_option("")
    await page.locator("#job-provider").select_option("pixazo")
    await expect(jobs).to_have_count(2)
    await page.get_by_label("Receipt outcome").select_option("invalid")
    await expect(receipts).to_have_count(1)
    await expect(receipts.first).to_contain_text("invalid")
    await page.locator("#receipt-provider").select_option("runware")
    await expect(receipts).to_have_count(0)
    await browser.assert_clean()


async def test_job_view_shows_body_attempts_image_and_redelivers(tmp_path: Path, browser: Browser) -> None:
    page = browser.page
    async with callback_server() as callback, fake_cdn() as cdn, mirroring_receiver(tmp_path, callback) as server:
        await browser.sign_in(server.base_url)
        async with server.client() as client, server.api() as api:
            job = (
                await api.post(
                    "/v1/jobs",
                    json={
                        "provider": "pixazo",
                        "provider_job_id": "px-fox",
                        "callback_url": callback.url("/hook"),
                        "metadata": {"prompt": "a red fox in fresh snow", "run": 7},
                    },
                )
            ).json()
            await client.post(webhook_path("pixazo"), json=pixazo_done("px-fox", cdn.url("px-fox/output")))
            await client.post(webhook_path("pixazo"), json=pixazo_done("px-fox", cdn.url("px-fox/output")))  # a repeat
        await eventually(lambda: len(callback.requests) == 1)

        link = page.get_by_role("link", name=job["id"])
        await link.focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name=f"Job {job['id']}")).to_be_visible()
        await expect(page.locator("#job-fields")).to_contain_text("succeeded")
        await expect(page.locator("#job-metadata")).to_contain_text('"prompt": "a red fox in fresh snow"')
        await page.wait_for_function(
            "() => { const i = document.querySelector('#job-outputs img');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )
        # The mirrored copy is shown, from the receiver itself; the origin was fetched once, by the mirror.
        assert (await page.locator("#job-outputs img").get_attribute("src")).startswith(f"{server.base_url}/media/")
        assert cdn.fetched == ["/px-fox/output.png"]
        attempts = page.locator("#deliveries details")
        await expect(attempts).to_have_count(1)
        await expect(attempts.first.locator("summary")).to_contain_text("200")
        await attempts.first.locator("summary").click()  # what was sent and what came back
        sent = callback.requests[0]
        await expect(attempts.first.get_by_label("Sent headers")).to_contain_text(
            f"webhook-signature: {sent.headers['webhook-signature']}"
        )
        await expect(attempts.first.get_by_label("Sent body")).to_contain_text(f'"id": "{job["id"]}"')
        await expect(attempts.first.get_by_label("Came back: HTTP 200 body")).to_have_text("ok")

        touched = page.locator("#job-receipts details")
        await expect(touched).to_have_count(2)
        await expect(touched.first).to_contain_text("duplicate")
        done = touched.last  # newest first: the completion that applied is the older one
        await expect(done).to_contain_text("applied")
        await done.locator("summary").click()
        await expect(done.locator("pre").first).to_contain_text('"request_id": "px-fox",\n  "status": "COMPLETED"')
        await done.get_by_role("button", name="Copy as curl").click()
        curl = await done.locator("pre.curl").text_content()
        assert "$RECEIVER_WEBHOOK_TOKEN" in curl and WEBHOOK_TOKEN not in curl
        # The receiver's own public URL (as the server knows it), not a guess at localhost.
        assert curl.startswith(f"curl -sS -X POST '{server.runtime.settings.public_url}/webhooks/pixazo?token=")
        await browser.screenshot("-job")

        # The command replays the receipt: against this receiver it is a duplicate.
        replay = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", curl],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN},
        )
        assert json.loads(replay.stdout)["outcome"] == "duplicate", replay.stdout + replay.stderr

        await page.get_by_role("button", name="Redeliver").click()
        await expect(page.locator("#redeliver-status")).to_contain_text("Queued a new message")
        await eventually(lambda: len(callback.requests) == 2)
        first, second = callback.requests
        assert first.webhook_id and second.webhook_id and first.webhook_id != second.webhook_id
        assert json.loads(second.body)["data"]["id"] == job["id"]
        await expect(attempts).to_have_count(2)
    await browser.assert_clean()


# ---- v0.3: paging, refusals, attempts in full, compare ------------------------------------------


async def test_lists_page_on_say_how_many_match_and_search_by_prefix(server: RunningServer, browser: Browser) -> None:
    page = browser.page
    jobs = page.locator("#job-list tbody tr")
    async with server.client() as client, server.api() as api:
        ids = [
            (await api.post("/v1/jobs", json={"provider": "pixazo", "provider_job_id": f"px-{i:03d}"})).json()["id"]
            for i in range(120)
        ]
        for i in range(55):
            await client.post(webhook_path("pixazo"), json={"request_id": f"px-{i:03d}", "status": "PROCESSING"})
    await browser.sign_in(server.base_url)
    await expect(jobs).to_have_count(50)
    await expect(page.locator("#jobs-note")).to_have_text("Showing 50 of 120 jobs")
    await expect(page.locator("#receipts-note")).to_have_text("Showing 50 of 55 messages")
    # The part of an id that differs is in bold; the whole id is its name and title.
    newest = page.get_by_role("link", name=ids[-1])
    await expect(newest.locator("b.id-tail")).to_have_text(ids[-1][-8:])
    await expect(newest).to_have_attribute("title", ids[-1])

    # Clicked where it is: scrolling it into view first would load the next page by itself (the list loads on
    # scrolling) and, on a slow machine, hide the button before the click lands.
    await page.get_by_role("button", name="More").first.dispatch_event("click")
    # A second page; the third may follow at once, as the list's end is then in view (it loads on scrolling).
    await expect(page.locator("#jobs-note")).to_have_text(re.compile(r"^Showing (100|120) of 120 jobs$"))
    assert await jobs.count() in (100, 120)
    await page.locator("#jobs-more").scroll_into_view_if_needed()  # the rest loads as it scrolls into view
    await expect(jobs).to_have_count(120)
    await expect(page.locator("#jobs-more")).to_be_hidden()
    await expect(jobs.last).to_contain_text("px-000")
    async with server.api() as api:  # live: a new job shows at the top, the older pages stay
        await api.post("/v1/jobs", json={"provider": "runware", "provider_job_id": "rw-new"})
    await expect(jobs).to_have_count(121)
    await expect(jobs.first).to_contain_text("rw-new")
    await expect(page.locator("#jobs-note")).to_have_text("Showing 121 of 121 jobs")
    await page.locator("#receipts-more").scroll_into_view_if_needed()  # older receipts load on scrolling down
    await expect(page.locator("#receipt-list details")).to_have_count(55)
    await expect(page.locator("#receipts-note")).to_have_text("Showing 55 of 55 messages")

    search = page.get_by_label("Search by job id or provider job id")
    await search.fill("px-11")
    await expect(jobs).to_have_count(10)
    await expect(page.locator("#jobs-note")).to_have_text("Showing 10 of 10 found")
    await search.fill(ids[42][:-6])  # the start of a job id
    await expect(jobs.filter(has_text=ids[42][-8:])).to_have_count(1)
    await search.fill(ids[42])
    await expect(jobs).to_have_count(1)
    await expect(jobs.first).to_contain_text("px-042")
    await search.fill("zz-nothing")
    await expect(jobs).to_have_count(0)
    await expect(page.locator("#jobs-note")).to_contain_text("No job whose id or provider job id starts with that")
    await browser.assert_clean()


async def test_refused_requests_show_what_arrived_without_credentials(server: RunningServer, browser: Browser) -> None:
    page = browser.page
    async with server.client() as client:
        await client.post(
            "/webhooks/pixazo?token=guessed-token-1",
            json={"request_id": "px-r"},
            headers={"Authorization": "Bearer leaked-bearer", "X-Trace": "trace-7"},
        )
        await client.post(f"/webhooks/imagine?token={WEBHOOK_TOKEN}", content=b"{}")
        invalid = (await client.post(webhook_path("pixazo"), content=b'{"request_id": 12')).json()
    await browser.sign_in(server.base_url)
    refusals = page.locator("#refusal-list details")
    await expect(refusals).to_have_count(3)
    await expect(page.locator("#refusals-note")).to_have_text("Showing 3 of 3 refused")
    await expect(refusals.nth(0)).to_contain_text("invalid body")
    await expect(refusals.nth(1)).to_contain_text("unknown provider")
    wrong = refusals.nth(2)
    await expect(wrong).to_contain_text("wrong token")
    await wrong.locator("summary").click()
    await expect(wrong).to_contain_text("POST /webhooks/pixazo?token=***")
    await expect(wrong.get_by_label("Headers of refusal")).to_contain_text("authorization: ***")
    await expect(wrong.get_by_label("Headers of refusal")).to_contain_text("x-trace: trace-7")
    await expect(wrong.get_by_label("Body of refusal")).to_contain_text('"request_id": "px-r"')
    content = await page.content()
    assert "guessed-token-1" not in content and "leaked-bearer" not in content and WEBHOOK_TOKEN not in content

    first = refusals.nth(0)  # an invalid body is also kept whole, as a receipt: the refusal links to it
    await first.locator("summary").click()
    await first.get_by_role("link", name=f"invalid receipt {invalid['receipt_id']}").click()
    await expect(page.get_by_label("Receipt outcome")).to_have_value("invalid")
    receipt = page.locator(f"#receipt-{invalid['receipt_id']}")
    await expect(receipt).to_have_attribute("open", "")
    await expect(receipt.get_by_label(f"Raw body of receipt {invalid['receipt_id']}")).to_have_text('{"request_id": 12')
    await browser.screenshot("-refusals")
    await browser.assert_clean()


async def test_compare_two_receipts_side_by_side(server: RunningServer, browser: Browser) -> None:
    page = browser.page
    async with server.client() as client:
        first = (await client.post(webhook_path("pixazo"), json=pixazo_done("px-left"))).json()
        second = (
            await client.post(
                webhook_path("pixazo"), json=pixazo_done("px-right"), headers={"User-Agent": "provider-agent/2"}
            )
        ).json()
    await browser.sign_in(server.base_url)
    await expect(page.locator("#receipt-list details")).to_have_count(2)
    await page.get_by_role("checkbox", name=f"Compare receipt {first['receipt_id']}", exact=True).check()
    await expect(page.locator("#compare-hint")).to_contain_text("pick one more")
    await page.get_by_role("checkbox", name=f"Compare receipt {second['receipt_id']}", exact=True).check()
    compare = page.locator("#compare")
    await expect(compare.get_by_role("heading", level=2)).to_have_text(
        f"Compare receipt {first['receipt_id']} with receipt {second['receipt_id']}"
    )
    body = compare.get_by_role("table", name="Body compared")
    await expect(body.locator("tr.changed")).to_have_count(2)  # the request_id line and the URL line
    await expect(body.locator("tr.changed td.del").first).to_contain_text('"request_id": "px-left"')
    await expect(body.locator("tr.changed td.add").first).to_contain_text('"request_id": "px-right"')
    await expect(body.locator("tr.same").first).to_have_text("{{")
    headers = compare.get_by_role("table", name="Headers compared")
    await expect(headers.locator("tr.changed")).to_have_count(1)
    await expect(headers.locator("td.add")).to_have_text("user-agent: provider-agent/2")
    # Picking the details' box did not open them.
    assert await page.locator("#receipt-list details[open]").count() == 0
    await compare.get_by_role("button", name="Close").click()
    await expect(compare).to_be_hidden()
    assert (
        await page.get_by_role("checkbox", name=f"Compare receipt {first['receipt_id']}", exact=True).is_checked()
        is False
    )
    await browser.assert_clean()


async def test_outputs_still_being_mirrored_say_so(tmp_path: Path, browser: Browser) -> None:
    page = browser.page
    async with callback_server() as callback, media_origin() as origin:
        tuning = MirrorTuning(attempt_timeout_s=120, read_timeout_s=120, poll_s=0.2)  # the hang outlasts the test
        async with mirroring_receiver(tmp_path, callback, mirror_tuning=tuning) as server:
            async with server.client() as client:
                done = (
                    await client.post(
                        webhook_path("pixazo"),
                        json=pixazo_done("px-slow", origin.url("/hang-once"), origin.url("/img/300")),
                    )
                ).json()
            await asyncio.wait_for(origin.hanging.wait(), 30)
            await browser.sign_in(server.base_url)
            await page.get_by_role("link", name=done["job_ids"][0]).click()
            captions = page.locator("#job-outputs figcaption")
            await expect(captions).to_have_count(2)
            await expect(captions.nth(1)).to_contain_text("mirrored")
            await expect(captions.first).to_contain_text("mirroring…")
    await browser.assert_clean()


async def test_a_waiting_message_is_retried_now_and_two_attempts_compare(tmp_path: Path, browser: Browser) -> None:
    page = browser.page
    script = (Reply(503, {"Retry-After": "3600"}, b'{"error": "down for maintenance"}'),)
    async with callback_server(*script) as callback:
        # Retries an hour apart: the message waits until `Retry now`.
        async with serve_app(create_app(make_settings(tmp_path, retry_schedule=(3600.0,)))) as server:
            async with server.client() as client, server.api() as api:
                job = (
                    await api.post(
                        "/v1/jobs",
                        json={
                            "provider": "pixazo",
                            "provider_job_id": "px-wait",
                            "callback_url": callback.url("/hook"),
                        },
                    )
                ).json()
                await client.post(webhook_path("pixazo"), json=pixazo_done("px-wait"))
            await eventually(lambda: len(callback.requests) == 1)
            await browser.sign_in(server.base_url)
            await page.get_by_role("link", name=job["id"]).click()
            attempts = page.locator("#deliveries details")
            await expect(attempts).to_have_count(1)
            await expect(attempts.first.locator("summary")).to_contain_text("503")
            await expect(page.locator("#waiting")).to_contain_text("Waiting for a retry")
            await attempts.first.locator("summary").click()
            await expect(attempts.first.get_by_label("Came back: HTTP 503 headers")).to_contain_text(
                "retry-after: 3600"
            )
            await expect(attempts.first.get_by_label("Came back: HTTP 503 body")).to_contain_text(
                "down for maintenance"
            )
            await browser.screenshot("-waiting")

            # The retry is signed in a later second than the first attempt, so its webhook-timestamp differs.
            first_signed = int(callback.requests[0].headers["webhook-timestamp"])
            await eventually(lambda: time.time() >= first_signed + 1, what="the next second")
            await page.get_by_role("button", name="Retry now").click()
            await eventually(lambda: len(callback.requests) == 2)
            await expect(attempts).to_have_count(2)
            await expect(attempts.nth(1).locator("summary")).to_contain_text("200")
            await expect(page.locator("#waiting")).to_be_hidden()

            await attempts.nth(0).get_by_role("checkbox").check()
            await attempts.nth(1).get_by_role("checkbox").check()
            compare = page.locator("#compare")
            await expect(compare.get_by_role("heading", level=2)).to_contain_text("Compare attempt 1 of")
            answer = compare.get_by_role("table", name="Answer compared")
            await expect(answer.locator("td.del")).to_have_text("HTTP 503")
            await expect(answer.locator("td.add")).to_have_text("HTTP 200")
            sent = compare.get_by_role("table", name="Sent headers compared")
            await expect(sent.locator("tr.changed").filter(has_text="webhook-timestamp")).to_have_count(1)
            answer_body = compare.get_by_role("table", name="Answer body compared")
            await expect(answer_body.locator("td.del").filter(has_text="down for maintenance")).to_have_count(1)
            await expect(answer_body.locator("td.add").first).to_have_text("ok")
            await browser.screenshot("-compare")
    await browser.assert_clean()


async def test_the_glance_shows_each_sink_its_state_lag_and_error(tmp_path: Path, browser: Browser) -> None:
    from tests.integration.sinks.brokers import TestBroker, require

    await require("redis")
    working = TestBroker("redis")
    await working.setup()
    # a second sink nobody answers for: failing, with why; its password never reaches the page
    dead = "amqp://guest:s3cret-pw@127.0.0.1:1/?exchange=nowhere"
    try:
        settings = make_settings(tmp_path, sinks=f"{working.url()},{dead}")
        async with serve_app(create_app(settings)) as server, server.client() as client:
            for n in range(3):
                assert (
                    await client.post(
                        webhook_path("pixazo"),
                        json={
                            "request_id": f"px-sink-{n}",
                            "status": "COMPLETED",
                            "output": {"media_url": ["https://cdn.example/a.png"]},
                        },
                    )
                ).status_code == 200
            page = browser.page
            await browser.sign_in(server.base_url)
            ok = page.get_by_label(f"Sink {working.sink_name}")
            await expect(ok).to_contain_text("ok")
            await expect(ok).to_contain_text("lag 0")
            failing = page.get_by_label("Sink amqp:nowhere")
            await expect(failing).to_contain_text("failing")
            await expect(failing).to_contain_text("lag 3")
            await expect(failing.locator(".sink-error")).not_to_be_empty()
            assert "s3cret-pw" not in await page.content()
            await browser.screenshot("-sinks")
            await browser.assert_clean()
    finally:
        await working.cleanup()
