"""`receiver listen`: follow a (deployed) receiver's `/v1/events` and forward each event to a local URL.

Each event goes out as a callback would (same body, Standard Webhooks headers, a `webhook-id` derived
from the event id so a re-sent event keeps it), in order, retried until the local endpoint answers
2xx. The last event forwarded is kept in a state file, so a restart resumes with `Last-Event-ID` and
first catches up on what it missed. A fresh state file starts from now: the source's newest event id
is learnt by asking for an id above it (the contract's 409 `last_event_id_ahead` answer names it),
and saved at once, so even a listener stopped before its first event misses nothing afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, TextIO
from urllib.parse import urlsplit

import httpx
import standardwebhooks
from standardwebhooks.webhooks import EmptyWebhookSecretError
from httpx_sse import ServerSentEvent, aconnect_sse

from receiver.util import backoff
from receiver.delivery.client import signed_headers
from receiver.delivery.worker import destination
from receiver.errors import ReceiverError
from receiver.relay.events import SourceEvent, parse_ahead, parse_event, parse_event_id
from receiver.relay.state import ListenState, StateError, load_state, save_state
from receiver.runtime import new_signing_secret
from receiver.util.sse_lines import LineTooLong, limit_lines
from receiver.util.urls import check_callback_url

DEFAULT_STATE_FILE = "./.receiver-listen.json"
USER_AGENT = "receiver-listen/1"
ABOVE_ANY_EVENT_ID = 2**63 - 1  # the largest id /v1/events accepts: always ahead of the source's newest
MAX_ERROR_BODY = 4096


@dataclass(frozen=True, slots=True)
class ListenTuning:
    """Timings of the listener; tests shorten them (CLI: --silence-timeout, --max-backoff)."""

    silence_s: float = 45.0  # three missed keep-alives (the source sends one every 15 s): the stream is dead
    connect_timeout_s: float = 10.0
    backoff_base_s: float = 0.5  # reconnects and local retries: base·2^n with jitter, capped
    backoff_cap_s: float = 5.0
    healthy_after_s: float = 30.0  # a connection up this long (or that forwarded an event) resets the backoff
    forward_timeout_s: float = 30.0  # one POST to the local endpoint
    max_line_bytes: int = 4 * 1024 * 1024


DEFAULT_TUNING = ListenTuning()


@dataclass(frozen=True, slots=True)
class ListenConfig:
    source_url: str  # the source receiver's base URL, no trailing slash
    forward_url: str
    api_token: str
    state_path: Path
    signing_secret: str | None = None  # RECEIVER_SIGNING_SECRET; None: generated and kept in the state file
    reset: bool = False


class ListenError(ReceiverError):
    """Ends the listener with `message` on stderr and exit status `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _Retry(ReceiverError):
    """A connection attempt failed in a way worth retrying."""


# -- the listener -----------------------------------------------------------------------------


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def read_limited(response: httpx.Response, limit: int = MAX_ERROR_BODY) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])


class Listener:
    def __init__(self, config: ListenConfig, tuning: ListenTuning = DEFAULT_TUNING, *,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr, rand: backoff.Random = random.random) -> None:
        self.config = config
        self.tuning = tuning
        self.out, self.err, self.rand = out, err, rand
        self.events_url = f"{config.source_url}/v1/events"
        self.state = ListenState()
        self._webhook: standardwebhooks.Webhook | None = None
        self._healthy = False  # the current connection lasted, or forwarded an event

    async def run(self) -> None:
        """Forward events until cancelled; raises ListenError for what a retry cannot fix."""
        self._prepare_state()
        limits = httpx.Timeout(self.tuning.forward_timeout_s, connect=self.tuning.connect_timeout_s)
        async with (
            httpx.AsyncClient(timeout=self.tuning.connect_timeout_s, headers={"user-agent": USER_AGENT}) as source,
            httpx.AsyncClient(timeout=limits, trust_env=False) as local,
        ):
            await self._follow(source, local)

    def stopped(self) -> None:
        last = self.state.last_event_id
        where = f"after event {last}" if last is not None else "from the start of this run"
        self._say(f"stopped; the next start resumes {where} ({self.config.state_path})")

    def _say(self, message: str) -> None:
        print(f"receiver listen: {message}", file=self.err, flush=True)

    def _save(self, state: ListenState) -> None:
        try:
            save_state(self.config.state_path, state)
        except StateError as exc:
            raise ListenError(str(exc)) from None
        self.state = state

    def _prepare_state(self) -> None:
        config = self.config
        try:
            state = load_state(config.state_path)
        except StateError as exc:
            raise ListenError(str(exc), 2) from None
        if state.source not in (None, config.source_url) and not config.reset:
            raise ListenError(
                f"{config.state_path} holds a position in the events of {state.source}, not of {config.source_url}: "
                "pass --reset to start over from now with this one, or use another --state file", 2)
        if config.reset:
            state = replace(state, last_event_id=None)
        state = replace(state, source=config.source_url)
        generated = config.signing_secret is None and state.signing_secret is None
        if generated:
            state = replace(state, signing_secret=new_signing_secret())
        self._save(state)  # also shows at once that the file is writable
        secret = config.signing_secret or state.signing_secret
        assert secret is not None
        try:
            self._webhook = standardwebhooks.Webhook(secret)
        except (ValueError, EmptyWebhookSecretError):  # not base64 (or not ASCII), or nothing after `whsec_`
            raise ListenError("RECEIVER_SIGNING_SECRET is not a valid signing secret (whsec_ + base64)", 2) from None
        if config.signing_secret is not None:
            self._say("signing with RECEIVER_SIGNING_SECRET")
        else:
            self._say(f"signing with {secret} ({'generated now, ' if generated else ''}kept in {config.state_path}; "
                      "set RECEIVER_SIGNING_SECRET to use your own)")
        shown = urlsplit(config.forward_url)._replace(query="", fragment="").geturl()  # a query may hold a token
        self._say(f"forwarding {self.events_url} to {shown}")

    async def _follow(self, source: httpx.AsyncClient, local: httpx.AsyncClient) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            self._healthy = False
            started = loop.time()
            try:
                if self.state.last_event_id is None:
                    await self._start_from_now(source)
                await self._stream(source, local)
                reason = "the source closed the stream"
            except httpx.ReadTimeout:
                reason = f"nothing received for {self.tuning.silence_s:g} s"
            except (httpx.HTTPError, LineTooLong) as exc:
                reason = describe(exc)
            except _Retry as exc:
                reason = str(exc)
            if self._healthy or loop.time() - started >= self.tuning.healthy_after_s:
                attempt = 0
            delay = backoff.exponential(attempt, base=self.tuning.backoff_base_s, cap=self.tuning.backoff_cap_s,
                                        rand=self.rand)
            attempt += 1
            self._say(f"event stream lost ({reason}); reconnecting in {delay:.1f} s")
            await asyncio.sleep(delay)

    def _auth(self) -> dict[str, str]:
        # identity: the line bound counts bytes as they arrive
        return {"Authorization": f"Bearer {self.config.api_token}", "Accept-Encoding": "identity"}

    async def _check(self, response: httpx.Response, *, probing: bool = False) -> int | None:
        """Raise for an answer that is not a stream; the newest id when it is a 409 and `probing`."""
        status = response.status_code
        if status in (401, 403):
            raise ListenError(f"{self.config.source_url} refused the API token (HTTP {status}): "
                              "pass the source receiver's token with --api-token or RECEIVER_API_TOKEN")
        if status == 409:
            newest = parse_ahead(await read_limited(response))
            if newest is None:
                raise _Retry("HTTP 409 from GET /v1/events")
            if probing:
                return newest
            raise ListenError(
                f"{self.config.source_url} has no event after {self.state.last_event_id}: its newest is {newest}, "
                "so its store was replaced (or this state file followed another receiver). What happened there "
                "in between cannot be replayed. To start over from now, run again with --reset "
                f"(or delete {self.config.state_path}).")
        if status != 200:
            raise _Retry(f"HTTP {status} from GET /v1/events")
        content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != "text/event-stream":
            raise _Retry(f"GET /v1/events answered {content_type or 'no content type'!r}, not an event stream")
        return None

    async def _start_from_now(self, source: httpx.AsyncClient) -> None:
        """Learn the source's newest event id and save it as the starting point."""
        headers = {**self._auth(), "Last-Event-ID": str(ABOVE_ANY_EVENT_ID)}
        async with source.stream("GET", self.events_url, headers=headers, timeout=self._stream_timeout()) as response:
            newest = await self._check(response, probing=True)
        if newest is None:  # an older receiver without the 409: the stream itself starts from now
            self._say("fresh state: forwarding events from now on")
            return
        self._save(self.state.after(newest))
        self._say(f"fresh state: forwarding events from now on (after event {newest})")

    def _stream_timeout(self) -> httpx.Timeout:
        # The read timeout is the silence detector: keep-alive comments are bytes too.
        return httpx.Timeout(self.tuning.connect_timeout_s, read=self.tuning.silence_s)

    async def _stream(self, source: httpx.AsyncClient, local: httpx.AsyncClient) -> None:
        headers = self._auth()
        if self.state.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.state.last_event_id)
        async with aconnect_sse(source, "GET", self.events_url, headers=headers, timeout=self._stream_timeout()) as events:
            await self._check(events.response)
            limit_lines(events.response, self.tuning.max_line_bytes)
            last = self.state.last_event_id
            self._say("connected" + (f", resuming after event {last}" if last is not None else ""))
            async for sse in events.aiter_sse():
                await self._handle(sse, local)

    async def _handle(self, sse: ServerSentEvent, local: httpx.AsyncClient) -> None:
        event_id = parse_event_id(sse)
        if event_id is None:
            self._say(f"ignored an event without a usable id ({sse.event!r})")
            return
        last = self.state.last_event_id
        if last is not None and event_id <= last:
            return  # already forwarded
        try:
            event = parse_event(event_id, sse)
        except ValueError as exc:
            self._say(f"skipped event {event_id} ({sse.event}): {exc}")
        else:
            await self._forward(event, local)
        self._save(self.state.after(event_id))
        self._healthy = True

    async def _forward(self, event: SourceEvent, local: httpx.AsyncClient) -> None:
        """POST the event until the local endpoint answers 2xx, then print its line."""
        assert self._webhook is not None
        loop = asyncio.get_running_loop()
        body = event.body()
        attempt = 0
        while True:
            started = loop.time()
            headers = {**signed_headers(self._webhook, event.webhook_id, body, datetime.now(timezone.utc)),
                       "user-agent": USER_AGENT}
            status: int | None = None
            try:
                async with local.stream("POST", self.config.forward_url, content=body, headers=headers) as response:
                    status = response.status_code
                problem = None if 200 <= status < 300 else f"HTTP {status}"
            except httpx.HTTPError as exc:
                problem = describe(exc)
            millis = round((loop.time() - started) * 1000)
            if problem is None:
                stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
                print(f"{stamp} {event.type} {event.job_id} {status} {millis}ms", file=self.out, flush=True)
                return
            delay = backoff.exponential(attempt, base=self.tuning.backoff_base_s, cap=self.tuning.backoff_cap_s,
                                        rand=self.rand)
            attempt += 1
            self._say(f"event {event.id} ({event.type} {event.job_id}): {destination(self.config.forward_url)} "
                      f"answered {problem} after {millis}ms; retrying in {delay:.1f} s")
            await asyncio.sleep(delay)


# -- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="URL",
                        help="the receiver to follow (its base URL)")
    parser.add_argument("--forward-to", required=True, metavar="URL", help="where to POST each event")
    parser.add_argument("--api-token", metavar="T", help="the source's API token (default: RECEIVER_API_TOKEN)")
    parser.add_argument("--state", default=DEFAULT_STATE_FILE, metavar="FILE",
                        help=f"where the last forwarded event is kept (default {DEFAULT_STATE_FILE})")
    parser.add_argument("--reset", action="store_true", help="forget the position in the state file: start from now")
    parser.add_argument("--silence-timeout", type=float, default=DEFAULT_TUNING.silence_s, metavar="S",
                        help=f"reconnect a stream silent this long (default {DEFAULT_TUNING.silence_s:g})")
    parser.add_argument("--max-backoff", type=float, default=DEFAULT_TUNING.backoff_cap_s, metavar="S",
                        help="longest wait between reconnects and between retries of the local endpoint "
                             f"(default {DEFAULT_TUNING.backoff_cap_s:g})")


def config_from(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[ListenConfig, ListenTuning]:
    token = (args.api_token or environ.get("RECEIVER_API_TOKEN") or "").strip()
    if not token:
        raise ListenError("no API token: pass --api-token or set RECEIVER_API_TOKEN "
                          "(the source receiver's; `receiver info` there prints it)", 2)
    for flag, url in (("--from", args.source), ("--forward-to", args.forward_to)):
        try:
            check_callback_url(url)
        except ValueError as exc:
            raise ListenError(f"{flag} {exc}", 2) from None
    if not (args.silence_timeout > 0 and args.max_backoff > 0):
        raise ListenError("--silence-timeout and --max-backoff must be positive", 2)
    config = ListenConfig(
        source_url=args.source.rstrip("/"), forward_url=args.forward_to, api_token=token,
        state_path=Path(args.state), signing_secret=(environ.get("RECEIVER_SIGNING_SECRET") or "").strip() or None,
        reset=args.reset,
    )
    tuning = replace(DEFAULT_TUNING, silence_s=args.silence_timeout, backoff_cap_s=args.max_backoff,
                     backoff_base_s=min(DEFAULT_TUNING.backoff_base_s, args.max_backoff))
    return config, tuning


async def _until_stopped(listener: Listener) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await listener.run()
        return 0
    except asyncio.CancelledError:
        listener.stopped()  # the state was saved after the last 2xx: nothing more to write
        return 0
    except ListenError as exc:
        print(f"receiver listen: {exc.message}", file=sys.stderr, flush=True)
        return exc.code
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main(args: argparse.Namespace) -> int:
    """`receiver listen`: runs until Ctrl-C or SIGTERM (exit 0) or an error a retry cannot fix (non-zero)."""
    try:
        config, tuning = config_from(args, os.environ)
    except ListenError as exc:
        print(f"receiver listen: {exc.message}", file=sys.stderr)
        return exc.code
    return asyncio.run(_until_stopped(Listener(config, tuning)))
