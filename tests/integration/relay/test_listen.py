"""`receiver listen` as a user runs it: a real subprocess following a real receiver, forwarding to a
local endpoint that verifies Standard Webhooks signatures."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import stat
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from receiver.app import create_app
from receiver.relay.events import SourceEvent, parse_ahead
from receiver.relay.listen import ListenConfig, Listener, ListenTuning, parse_since, shown_url
from receiver.util.bounded_sse import BoundedSSE, Oversized
from tests.support import (
    API_TOKEN,
    SIGNING_SECRET,
    WEBHOOK_TOKEN,
    RunningServer,
    eventually,
    free_port,
    make_settings,
    serve_app,
)

FAST = ["--silence-timeout", "5", "--max-backoff", "0.2"]


class LocalEndpoint:
    """The developer's local webhook handler: verifies each request, answers `status`, records what it took."""

    def __init__(self, secret: str | None = SIGNING_SECRET) -> None:
        self.webhook = standardwebhooks.Webhook(secret) if secret else None
        self.status = 200
        self.attempts = 0
        self.bad_signatures = 0
        self.received: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, payload) of each accepted request
        self.app = Starlette(routes=[Route("/hook", self._handle, methods=["POST"])])

    @property
    def job_ids(self) -> list[str]:
        return [payload["data"]["id"] for _, payload in self.received]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.attempts += 1
        try:
            assert self.webhook is not None
            payload = self.webhook.verify(body, dict(request.headers))
        except (AssertionError, standardwebhooks.WebhookVerificationError):
            self.bad_signatures += 1
            return Response(status_code=400)
        if self.status != 200:
            return Response(status_code=self.status)
        self.received.append((request.headers["webhook-id"], payload))
        return Response(status_code=200)


class Listen:
    """`python -m receiver.cli listen …` as a subprocess, its stdout and stderr collected line by line."""

    def __init__(
        self, source: str, forward_to: str, state: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.args = ["--from", source, "--forward-to", forward_to, "--state", str(state), *extra]
        base = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
        self.env = {**base, "RECEIVER_API_TOKEN": API_TOKEN, "RECEIVER_SIGNING_SECRET": SIGNING_SECRET, **(env or {})}
        self.env = {k: v for k, v in self.env.items() if v}
        self.out: list[str] = []
        self.err: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> Listen:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "receiver.cli",
            "listen",
            *self.args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout and self.proc.stderr
        self._readers = [
            asyncio.create_task(self._read(self.proc.stdout, self.out)),
            asyncio.create_task(self._read(self.proc.stderr, self.err)),
        ]
        return self

    async def connected(self) -> Listen:
        await eventually(lambda: self.said("connected") or self.exited, what="the listener to connect")
        assert not self.exited, self.stderr
        return self

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode().rstrip("\n"))

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.err)

    async def wait(self, timeout: float = 20) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers)
        return code

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await self.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


@contextlib.asynccontextmanager
async def listening(*args: Any, **kwargs: Any) -> AsyncIterator[Listen]:
    listener = Listen(*args, **kwargs)
    try:
        yield await listener.start()
    finally:
        listener.kill()


@contextlib.asynccontextmanager
async def local_endpoint(secret: str | None = SIGNING_SECRET) -> AsyncIterator[tuple[LocalEndpoint, str]]:
    endpoint = LocalEndpoint(secret)
    async with serve_app(endpoint.app) as running:
        yield endpoint, f"{running.base_url}/hook"


async def complete_jobs(source: RunningServer, count: int, *, failed: bool = False) -> list[str]:
    """Finish `count` jobs at the source, one after another, through Pixazo webhooks; their ids in order."""
    ids = []
    async with source.client() as client:
        for _ in range(count):
            request_id = f"px-{uuid.uuid4().hex[:10]}"
            body: dict[str, Any] = {
                "request_id": request_id,
                "status": "COMPLETED",
                "output": {"media_url": [f"https://cdn.pixazo.ai/{request_id}/out.jpeg"], "media_type": "image/jpeg"},
            }
            if failed:
                body = {"request_id": request_id, "status": "ERROR", "error": "content policy", "output": None}
            reply = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", json=body)
            assert reply.status_code == 200, reply.text
            ids.extend(reply.json()["job_ids"])
    return ids


def event_id(webhook_id: str) -> int:
    return int(webhook_id.split("_")[1])


def saved(state: Path) -> dict[str, Any]:
    return dict(json.loads(state.read_text()))


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[RunningServer]:
    (tmp_path / "source").mkdir()
    async with serve_app(create_app(make_settings(tmp_path / "source"))) as running:
        yield running


async def test_forwards_live_events_signed_and_in_order(source: RunningServer, tmp_path: Path) -> None:
    state = tmp_path / "listen.json"
    async with local_endpoint(secret=None) as (local, url):
        async with listening(source.base_url, url, state, *FAST, env={"RECEIVER_SIGNING_SECRET": ""}) as listener:
            await listener.connected()
            # No RECEIVER_SIGNING_SECRET: a generated one, printed and kept (owner-only) in the state file.
            secret = saved(state)["signing_secret"]
            assert secret.startswith("whsec_") and listener.said(secret)
            assert stat.S_IMODE(state.stat().st_mode) == 0o600
            local.webhook = standardwebhooks.Webhook(secret)

            jobs = await complete_jobs(source, 5)
            await eventually(lambda: len(local.received) >= 5 and len(listener.out) >= 5, what="five events forwarded")
            assert local.job_ids == jobs and local.bad_signatures == 0
            ids = [event_id(webhook_id) for webhook_id, _ in local.received]
            assert ids == sorted(set(ids)) and all(w.startswith("evt_") for w, _ in local.received)
            async with source.api() as api:
                for (_, payload), job_id in zip(local.received, jobs):
                    assert set(payload) == {"type", "timestamp", "data"} and payload["type"] == "job.succeeded"
                    assert payload["data"] == (await api.get(f"/v1/jobs/{job_id}")).json()
            for line, job_id in zip(listener.out, jobs):
                assert "job.succeeded" in line and job_id in line and " 200 " in line and line.endswith("ms")
            await eventually(lambda: saved(state)["last_event_id"] == ids[-1], what="the state file to follow")
            assert await listener.stop() == 0
    assert saved(state)["last_event_id"] == ids[-1] and saved(state)["signing_secret"] == secret
    assert API_TOKEN not in listener.stderr


async def test_catches_up_in_order_after_being_stopped(source: RunningServer, tmp_path: Path) -> None:
    state = tmp_path / "listen.json"
    async with local_endpoint() as (local, url):
        async with listening(source.base_url, url, state, *FAST) as first:
            await first.connected()
            jobs = await complete_jobs(source, 2)
            await eventually(lambda: len(local.received) == 2, what="two events forwarded")
            assert await first.stop() == 0
        assert first.said("stopped")

        jobs += await complete_jobs(source, 3)  # while nobody listens
        await asyncio.sleep(0.2)
        assert len(local.received) == 2

        async with listening(source.base_url, url, state, *FAST) as second:
            await eventually(lambda: len(set(local.job_ids)) == 5, what="the missed events")
            await asyncio.sleep(0.3)  # nothing more may come
            assert second.said("resuming after event")
            jobs += await complete_jobs(source, 1)  # and then live again
            await eventually(lambda: len(set(local.job_ids)) == 6, what="a live event after the catch-up")
            assert await second.stop(signal.SIGINT) == 0  # Ctrl-C
    # In order, none twice, except at most the one in flight when the first listener stopped.
    seen = local.job_ids
    assert seen in (jobs, jobs[:2] + jobs[1:]), seen
    assert local.bad_signatures == 0


async def test_keeps_order_while_the_local_endpoint_fails(source: RunningServer, tmp_path: Path) -> None:
    async with local_endpoint() as (local, url):
        local.status = 503
        async with listening(source.base_url, url, tmp_path / "listen.json", *FAST) as listener:
            await listener.connected()
            jobs = await complete_jobs(source, 4)
            await eventually(lambda: local.attempts >= 4, what="retries of the first event")
            assert local.received == [] and listener.out == []
            assert listener.said("HTTP 503")
            local.status = 200
            await eventually(lambda: len(local.received) >= 4, what="the events once the endpoint recovers")
            await asyncio.sleep(0.2)
            assert local.job_ids == jobs and len(listener.out) == 4
            assert await listener.stop() == 0


async def test_refuses_to_resume_ahead_of_a_replaced_store(source: RunningServer, tmp_path: Path) -> None:
    state = tmp_path / "listen.json"
    state.write_text(json.dumps({"source": source.base_url, "last_event_id": 1000, "signing_secret": None}))
    async with local_endpoint() as (_, url):
        async with listening(source.base_url, url, state, *FAST) as listener:
            assert await listener.wait() not in (0, None)
            assert listener.said("store was replaced") and listener.said("--reset") and listener.said(str(state))
            assert saved(state)["last_event_id"] == 1000  # left as it was, for the user to decide

        async with listening(source.base_url, url, state, "--reset", *FAST) as again:
            await again.connected()
            assert again.said("from now on")
            assert await again.stop() == 0
        assert saved(state)["last_event_id"] == 0  # the source's newest: from now on


async def test_a_refused_token_is_a_clear_error(source: RunningServer, tmp_path: Path) -> None:
    async with local_endpoint() as (_, url):
        async with listening(
            source.base_url,
            url,
            tmp_path / "listen.json",  # default timings
            env={"RECEIVER_API_TOKEN": "wrong-token-5e2b"},
        ) as listener:
            assert await listener.wait() != 0
    assert listener.said("refused the API token") and "wrong-token-5e2b" not in listener.stderr


class SilentSource:
    """A fake source: the first stream sends its headers, then nothing; later ones send one event."""

    def __init__(self) -> None:
        self.streams = 0
        self.last_event_ids: list[str | None] = []
        self.app = Starlette(routes=[Route("/v1/events", self._events)])

    async def _events(self, request: Request) -> Response:
        last = request.headers.get("last-event-id")
        if last is not None and int(last) > 0:
            return JSONResponse({"error": "last_event_id_ahead", "last_event_id": 0}, status_code=409)
        self.streams += 1
        self.last_event_ids.append(last)
        silent = self.streams == 1

        async def body() -> AsyncIterator[bytes]:
            if not silent:
                job = {"id": "job_after_silence", "status": "succeeded", "completed_at": "2026-11-29T10:00:00Z"}
                yield f"id: 1\nevent: job.succeeded\ndata: {json.dumps(job)}\n\n".encode()
            await asyncio.Event().wait()  # then nothing, ever
            yield b""

        return StreamingResponse(body(), media_type="text/event-stream")


async def test_reconnects_a_silent_stream(tmp_path: Path) -> None:
    fake = SilentSource()
    async with serve_app(fake.app) as running, local_endpoint() as (local, url):
        async with listening(
            running.base_url, url, tmp_path / "listen.json", "--silence-timeout", "0.5", "--max-backoff", "0.2"
        ) as listener:
            await eventually(lambda: len(local.received) == 1, what="the event sent after the reconnect")
            assert fake.streams >= 2 and fake.last_event_ids[:2] == ["0", "0"]
            assert listener.said("nothing received for 0.5 s")
            webhook_id, payload = local.received[0]
            assert webhook_id == "evt_1_job_after_silence" and payload["data"]["id"] == "job_after_silence"
            assert payload["timestamp"] == "2026-11-29T10:00:00Z"
            assert await listener.stop() == 0


def test_pure_parts() -> None:
    assert parse_ahead(b'{"error": "last_event_id_ahead", "last_event_id": 7}') == 7
    assert parse_ahead(b'{"error": "other", "last_event_id": 7}') is None and parse_ahead(b"<html>") is None
    event = SourceEvent(12, "job.failed", {"id": "job_x", "completed_at": "2026-01-01T00:00:00Z"})
    assert event.webhook_id == "evt_12_job_x"
    assert json.loads(event.body()) == {"type": "job.failed", "timestamp": "2026-01-01T00:00:00Z", "data": event.data}
    assert SourceEvent(3, "job.failed", {"id": "a b"}).webhook_id == "evt_3"


class LongLineSource(SilentSource):
    """Like SilentSource, but its first stream sends one endless line instead of nothing."""

    async def _events(self, request: Request) -> Response:
        response = await super()._events(request)
        if self.streams != 1 or response.status_code != 200:
            return response

        async def endless() -> AsyncIterator[bytes]:
            yield b"data: "
            while True:
                yield b"x" * 4096
                await asyncio.sleep(0)

        return StreamingResponse(endless(), media_type="text/event-stream")


async def test_a_line_over_the_bound_ends_the_connection(tmp_path: Path) -> None:
    fake = LongLineSource()
    err = io.StringIO()
    async with serve_app(fake.app) as running, local_endpoint() as (local, url):
        config = ListenConfig(
            source_url=running.base_url,
            forward_url=url,
            api_token=API_TOKEN,
            state_path=tmp_path / "listen.json",
            signing_secret=SIGNING_SECRET,
        )
        tuning = ListenTuning(silence_s=5, backoff_base_s=0.05, backoff_cap_s=0.1, max_line_bytes=65536)
        task = asyncio.create_task(Listener(config, tuning, out=io.StringIO(), err=err).run())
        try:
            await eventually(lambda: len(local.received) == 1, what="the event after the endless line")
            assert fake.streams >= 2
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert "Oversized" in err.getvalue() and "line exceeds 65536 characters" in err.getvalue()
    assert local.job_ids == ["job_after_silence"]


# -- v0.3: bounded events, --since, filters, one listener per state file, clear failures ----------------


class HugeEventSource:
    """Event 1 is 200 data lines of 1 MiB each (each line under the line bound), event 2 an ordinary one;
    the source counts the bytes of event 1 it managed to send."""

    def __init__(self) -> None:
        self.sent = 0
        self.last_event_ids: list[str | None] = []
        self.app = Starlette(routes=[Route("/v1/events", self._events)])

    async def _events(self, request: Request) -> Response:
        last = int(request.headers.get("last-event-id") or 0)
        if last > 2:
            return JSONResponse({"error": "last_event_id_ahead", "last_event_id": 0}, status_code=409)
        self.last_event_ids.append(request.headers.get("last-event-id"))

        async def body() -> AsyncIterator[bytes]:
            if last < 1:
                yield b"id: 1\nevent: job.succeeded\n"
                line = b"data: " + b"x" * (1024 * 1024) + b"\n"
                for _ in range(200):
                    yield line
                    self.sent += len(line)
                yield b"\n"
            if last < 2:
                job = {"id": "job_after_huge", "status": "succeeded", "completed_at": "2026-11-29T10:00:00Z"}
                yield f"id: 2\nevent: job.succeeded\ndata: {json.dumps(job)}\n\n".encode()
            await asyncio.Event().wait()
            yield b""

        return StreamingResponse(body(), media_type="text/event-stream")


async def test_an_event_over_the_bound_is_skipped_and_never_buffered(tmp_path: Path) -> None:
    """200 data lines of 1 MiB, each under the line bound: the event's bound (8 MiB) ends the reading, so the
    listener's peak memory stays far below the event's size; the event is skipped, saying so, and the next
    connection resumes after it."""
    fake = HugeEventSource()
    state = tmp_path / "listen.json"
    async with serve_app(fake.app) as running, local_endpoint() as (local, url):
        async with listening(running.base_url, url, state, *FAST) as listener:
            await eventually(lambda: len(local.received) == 1, what="the event after the oversized one")
            await eventually(lambda: saved(state)["last_event_id"] == 2, what="the position after it")
            assert listener.proc is not None
            status = Path(f"/proc/{listener.proc.pid}/status").read_text()
            peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
            assert await listener.stop() == 0
    assert peak_kib < 160 * 1024, f"peak RSS {peak_kib} KiB"  # the event alone is 200 MiB
    assert listener.said("skipped event 1 (job.succeeded)") and listener.said("8388608"), listener.stderr
    assert fake.last_event_ids[:2] == ["0", "1"]  # the next connection resumed after it
    assert local.job_ids == ["job_after_huge"]


def test_the_event_bound_counts_every_data_line() -> None:
    decoder = BoundedSSE(max_line=1000, max_event=2500, keep=10)
    assert decoder.feed(b"id: 7\nevent: job.failed\n") == []
    decoder.feed(b"data: " + b"y" * 900 + b"\n")
    decoder.feed(b"data: " + b"y" * 900 + b"\n")
    with pytest.raises(Oversized) as raised:
        decoder.feed(b"data: " + b"y" * 900 + b"\n")
    assert (raised.value.event_id, raised.value.event, len(raised.value.kept)) == ("7", "job.failed", 10)


async def test_since_forwards_what_happened_since_then_whatever_the_state_says(
    source: RunningServer, tmp_path: Path
) -> None:
    """Needs `GET /v1/events?since=` on the source (the receiver's own, served here)."""
    state = tmp_path / "listen.json"
    async with local_endpoint() as (local, url):
        async with listening(source.base_url, url, state, *FAST) as first:
            await first.connected()
            before = await complete_jobs(source, 2)
            await eventually(lambda: len(local.received) == 2, what="two events forwarded")
            await eventually(lambda: saved(state)["last_event_id"] == 2, what="the position saved")
            assert await first.stop() == 0
        await asyncio.sleep(1.1)  # `since` has a precision of seconds on the wire
        cut = datetime.now(UTC).isoformat()
        await asyncio.sleep(1.1)
        after = await complete_jobs(source, 2)
        async with listening(source.base_url, url, state, *FAST) as second:  # the state is past both of `before`
            await eventually(lambda: len(local.received) == 4, what="the two missed events")
            await eventually(lambda: saved(state)["last_event_id"] == 4, what="the position saved")
            assert await second.stop() == 0
        assert local.job_ids == before + after
        # The state file says everything was forwarded; --since forwards again what happened since the cut.
        async with listening(source.base_url, url, state, "--since", cut, *FAST) as again:
            await eventually(lambda: len(local.received) == 6, what="the events since the cut, again")
            await asyncio.sleep(0.3)
            assert local.job_ids[4:] == after and again.said("since")
            live = await complete_jobs(source, 1)
            await eventually(lambda: local.job_ids[-1:] == live, what="a live event after the replay")
            await eventually(lambda: saved(state)["last_event_id"] == 5, what="the position saved")
            assert await again.stop() == 0
        assert event_id(local.received[-1][0]) == 5
        # A duration works the same way: everything above happened within the last hour.
        async with listening(source.base_url, url, state, "--since", "1h", *FAST) as hour:
            await eventually(lambda: len(local.received) == 12, what="the last hour, again")
            assert await hour.stop() == 0
        assert local.job_ids[7:] == before + after + live


async def test_type_and_provider_filters_forward_only_those_and_advance_the_state(
    source: RunningServer, tmp_path: Path
) -> None:
    state = tmp_path / "listen.json"
    async with local_endpoint() as (local, url):
        async with listening(source.base_url, url, state, "--type", "job.failed", *FAST) as only_failed:
            await only_failed.connected()
            await complete_jobs(source, 2)
            failed = await complete_jobs(source, 1, failed=True)
            await complete_jobs(source, 1)
            await eventually(lambda: len(local.received) == 1 and only_failed.out, what="the failed job's event")
            assert local.job_ids == failed and local.received[0][1]["type"] == "job.failed"
            await complete_jobs(source, 1)
            await asyncio.sleep(0.3)
            assert len(local.received) == 1
            await eventually(lambda: saved(state)["last_event_id"] == 5, what="filtered events to advance the state")
            assert await only_failed.stop() == 0
        async with listening(source.base_url, url, state, "--provider", "runware,apiframe", *FAST) as other:
            await other.connected()
            await complete_jobs(source, 2)
            await eventually(lambda: saved(state)["last_event_id"] == 7, what="pixazo events to advance the state")
            assert len(local.received) == 1 and other.out == []
            assert await other.stop() == 0
        async with listening(source.base_url, url, state, "--type", "job.done", *FAST) as wrong:
            assert await wrong.wait() == 2
        assert wrong.said("--type job.done: not one of job.succeeded, job.failed, job.cancelled")


async def test_two_listeners_cannot_share_a_state_file(source: RunningServer, tmp_path: Path) -> None:
    state = tmp_path / "listen.json"
    async with local_endpoint() as (local, url):
        async with listening(source.base_url, url, state, *FAST) as first:
            await first.connected()
            async with listening(source.base_url, url, state, *FAST) as second:
                assert await second.wait() == 2
            assert len(second.err) == 1 and second.said("another receiver listen") and second.said(str(state))
            assert second.said(f"pid {first.proc.pid if first.proc else 0}")
            jobs = await complete_jobs(source, 1)
            await eventually(lambda: local.job_ids == jobs, what="the first listener to go on")
            assert await first.stop() == 0
        async with listening(source.base_url, url, state, *FAST) as third:  # the lock went with the process
            await third.connected()
            assert await third.stop() == 0


async def test_not_a_receiver_or_a_refused_token_exits_2_at_once_writing_nothing(
    source: RunningServer, tmp_path: Path
) -> None:
    async def page(request: Request) -> Response:
        return Response("<html>hello</html>", media_type="text/html", status_code=404)

    website = Starlette(routes=[Route("/{path:path}", page)])
    async with serve_app(website) as site, local_endpoint() as (_, url):
        for source_url, env, expected in (
            (site.base_url, {}, "is not a receiver"),
            (source.base_url, {"RECEIVER_API_TOKEN": "wrong-token-5e2b"}, "refused the API token"),
        ):
            state = tmp_path / f"state-{uuid.uuid4().hex[:6]}.json"
            async with listening(source_url, url, state, env=env) as listener:  # default timings: no retries
                assert await listener.wait() == 2
            assert listener.err == [listener.err[0]] and expected in listener.err[0], listener.err
            assert f"{source_url}" in listener.err[0] and "wrong-token-5e2b" not in listener.stderr
            assert not state.exists()


async def test_a_failure_line_names_the_full_local_url(source: RunningServer, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/hooks/images?token=local-secret-91"
    async with listening(source.base_url, nowhere, tmp_path / "listen.json", *FAST) as listener:
        await listener.connected()
        await complete_jobs(source, 1)
        await eventually(lambda: listener.said("retrying"), what="a failed forward")
        line = next(line for line in listener.err if "retrying" in line)
        assert f"POST {nowhere.split('?')[0]}?…" in line and "ConnectError" in line, line
        assert "local-secret-91" not in listener.stderr
        assert await listener.stop() == 0


def test_the_relay_imports_no_server_module() -> None:
    import subprocess

    code = (
        "import sys, receiver.relay.listen; "
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('receiver', 'starlette', 'aiohttp', "
        "'asyncpg', 'uvicorn', 'prometheus_client')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    server = {
        "receiver.app",
        "receiver.runtime",
        "receiver.delivery.worker",
        "receiver.delivery.client",
        "receiver.store",
        "receiver.settings",
        "receiver.web.validation",
        "starlette",
        "aiohttp",
        "asyncpg",
        "uvicorn",
    }
    assert not server & set(loaded), sorted(server & set(loaded))


def test_since_and_url_parsing() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    assert parse_since("1d1h30m", now) == datetime(2026, 12, 6, 10, 30, tzinfo=UTC)
    assert parse_since("2026-12-01T09:30:00Z", now) == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert parse_since("2026-12-01T10:30:00+01:00", now) == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    for bad in ("", "2 hours", "h", "yesterday"):
        with pytest.raises(ValueError, match="neither a duration"):
            parse_since(bad, now)
    assert shown_url("http://localhost:3000/hooks/x?token=s") == "http://localhost:3000/hooks/x?…"
    assert shown_url("http://localhost:3000/hooks/x") == "http://localhost:3000/hooks/x"
