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
import fcntl
import os
import random
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, NoReturn, TextIO
from urllib.parse import urlsplit

import httpx
import standardwebhooks
from httpx_sse import ServerSentEvent
from standardwebhooks.webhooks import EmptyWebhookSecretError

from receiver.errors import ReceiverError
from receiver.providers import PROVIDER_NAMES
from receiver.relay.events import SourceEvent, parse_ahead, parse_event, parse_event_id, parse_id
from receiver.relay.state import ListenState, StateError, load_state, save_state
from receiver.signing import new_signing_secret, signature_headers
from receiver.util import backoff
from receiver.util.bounded_sse import Oversized, aiter_bounded_sse
from receiver.util.urls import check_callback_url

DEFAULT_STATE_FILE = "./.receiver-listen.json"
USER_AGENT = "receiver-listen/1"
ABOVE_ANY_EVENT_ID = 2**63 - 1  # the largest id /v1/events accepts: always ahead of the source's newest
MAX_ERROR_BODY = 4096
EVENT_TYPES = ("job.succeeded", "job.failed", "job.cancelled")


@dataclass(frozen=True, slots=True)
class ListenTuning:
    """Timings of the listener; tests shorten them (CLI: --silence-timeout, --max-backoff)."""

    silence_s: float = 45.0  # three missed keep-alives (the source sends one every 15 s): the stream is dead
    connect_timeout_s: float = 10.0
    backoff_base_s: float = 0.5  # reconnects and local retries: base·2^n with jitter, capped
    backoff_cap_s: float = 5.0
    healthy_after_s: float = 30.0  # a connection up this long (or that forwarded an event) resets the backoff
    forward_timeout_s: float = 30.0  # one POST to the local endpoint
    max_line_bytes: int = 4 * 1024 * 1024  # in characters once decoded, as bounded_sse counts
    max_event_bytes: int = 8 * 1024 * 1024  # all `data:` lines of one event together, likewise


DEFAULT_TUNING = ListenTuning()


@dataclass(frozen=True, slots=True)
class ListenConfig:
    source_url: str  # the source receiver's base URL, no trailing slash
    forward_url: str
    api_token: str
    state_path: Path
    signing_secret: str | None = None  # RECEIVER_SIGNING_SECRET; None: generated and kept in the state file
    reset: bool = False
    since: datetime | None = None  # --since: first replay from this time, whatever the state file says
    types: frozenset[str] | None = None  # --type: forward only these (None: all)
    providers: frozenset[str] | None = None  # --provider: forward only jobs of these (None: all)


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


def shown_url(url: str) -> str:
    """The URL as printed: whole, but for its query, which may hold a token."""
    parts = urlsplit(url)
    return parts._replace(query="…" if parts.query else "", fragment="").geturl()


async def read_limited(response: httpx.Response, limit: int = MAX_ERROR_BODY) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])


def lock_state(path: Path) -> IO[str]:
    """Hold `<state>.lock` for the life of the process: two listeners on one state file would both forward
    and overwrite each other's position. ListenError (exit 2) when another process holds it."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        handle = open(lock_path, "a+", encoding="utf-8")
    except OSError as exc:
        raise ListenError(f"cannot open the lock file {lock_path}: {exc.strerror or exc}", 2) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read(32).strip()
        handle.close()
        raise ListenError(
            f"another receiver listen{f' (pid {holder})' if holder.isdigit() else ''} is using the "
            f"state file {path}: stop it, or give this one its own --state file",
            2,
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Listener:
    def __init__(
        self,
        config: ListenConfig,
        tuning: ListenTuning = DEFAULT_TUNING,
        *,
        out: TextIO = sys.stdout,
        err: TextIO = sys.stderr,
        rand: backoff.Random = random.random,
    ) -> None:
        self.config = config
        self.tuning = tuning
        self.out, self.err, self.rand = out, err, rand
        self.events_url = f"{config.source_url}/v1/events"
        self.state = ListenState()
        self._webhook: standardwebhooks.Webhook | None = None
        self._secret_note = ""
        self._healthy = False  # the current connection lasted, or forwarded an event
        self._verified = False  # the source answered as a receiver that takes our token
        self._replaying_since = config.since is not None  # until the first event of the --since replay

    async def run(self) -> None:
        """Forward events until cancelled; raises ListenError for what a retry cannot fix."""
        lock = lock_state(self.config.state_path)
        try:
            self._prepare_state()
            limits = httpx.Timeout(self.tuning.forward_timeout_s, connect=self.tuning.connect_timeout_s)
            async with (
                httpx.AsyncClient(timeout=self.tuning.connect_timeout_s, headers={"user-agent": USER_AGENT}) as source,
                httpx.AsyncClient(timeout=limits, trust_env=False) as local,
            ):
                await self._follow(source, local)
        finally:
            lock.close()  # releases the lock; the file stays (removing it would race a listener starting now)

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
        """Read the state file and check what can be checked without the source; writes nothing yet."""
        config = self.config
        try:
            state = load_state(config.state_path)
        except StateError as exc:
            raise ListenError(str(exc), 2) from None
        if state.source not in (None, config.source_url) and not config.reset:
            raise ListenError(
                f"{config.state_path} holds a position in the events of {state.source}, not of {config.source_url}: "
                "pass --reset to start over from now with this one, or use another --state file",
                2,
            )
        if config.reset:
            state = replace(state, last_event_id=None)
        state = replace(state, source=config.source_url)
        generated = config.signing_secret is None and state.signing_secret is None
        if generated:
            state = replace(state, signing_secret=new_signing_secret())
        secret = config.signing_secret or state.signing_secret
        assert secret is not None
        try:
            self._webhook = standardwebhooks.Webhook(secret)
        except (ValueError, EmptyWebhookSecretError):  # not base64 (or not ASCII), or nothing after `whsec_`
            raise ListenError("RECEIVER_SIGNING_SECRET is not a valid signing secret (whsec_ + base64)", 2) from None
        if config.signing_secret is not None:
            self._secret_note = "signing with RECEIVER_SIGNING_SECRET"
        else:
            self._secret_note = (
                f"signing with {secret} ({'generated now, ' if generated else ''}kept in "
                f"{config.state_path}; set RECEIVER_SIGNING_SECRET to use your own)"
            )
        self.state = state

    def _verified_source(self, newest: int | None) -> None:
        """The source answered as a receiver: now the state file is written, and where to start is known."""
        self._verified = True
        last = self.state.last_event_id
        if newest is not None and last is not None and last > newest and not self._replaying_since:
            self._ahead(newest)
        self._save(self.state)  # also shows at once that the file is writable
        self._say(self._secret_note)
        self._say(f"forwarding {self.events_url} to {shown_url(self.config.forward_url)}")
        if self._replaying_since:
            assert self.config.since is not None
            self._say(f"forwarding what happened since {iso(self.config.since)} first")
        elif last is None:
            if newest is None:  # an older receiver without the 409: the stream itself starts from now
                self._say("fresh state: forwarding events from now on")
            else:
                self._save(self.state.after(newest))
                self._say(f"fresh state: forwarding events from now on (after event {newest})")

    async def _follow(self, source: httpx.AsyncClient, local: httpx.AsyncClient) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            self._healthy = False
            started = loop.time()
            try:
                if not self._verified:
                    self._verified_source(await self._probe(source))
                await self._stream(source, local)
                reason = "the source closed the stream"
            except httpx.ReadTimeout:
                reason = f"nothing received for {self.tuning.silence_s:g} s"
            except httpx.HTTPError as exc:
                reason = describe(exc)
            except Oversized as exc:
                reason = self._oversized(exc)
            except _Retry as exc:
                reason = str(exc)
            if self._healthy or loop.time() - started >= self.tuning.healthy_after_s:
                attempt = 0
            delay = backoff.exponential(
                attempt, base=self.tuning.backoff_base_s, cap=self.tuning.backoff_cap_s, rand=self.rand
            )
            attempt += 1
            self._say(f"event stream {self.events_url} lost ({reason}); reconnecting in {delay:.1f} s")
            await asyncio.sleep(delay)

    def _oversized(self, exc: Oversized) -> str:
        """An event too large to keep cannot be forwarded, now or on a reconnect: skip it, saying so."""
        event_id = parse_id(exc.event_id)
        last = self.state.last_event_id
        if event_id is not None and (last is None or event_id > last or self._replaying_since):
            self._say(
                f"skipped event {event_id} ({exc.event or 'message'}): {exc.message} "
                f"(the bound is {self.tuning.max_event_bytes} bytes)"
            )
            self._replaying_since = False
            self._save(self.state.after(event_id))
        return describe(exc)

    def _auth(self) -> dict[str, str]:
        # identity: the bounds count what arrives, not what it inflates to
        return {"Authorization": f"Bearer {self.config.api_token}", "Accept-Encoding": "identity"}

    def _ahead(self, newest: int) -> NoReturn:
        raise ListenError(
            f"{self.config.source_url} has no event after {self.state.last_event_id}: its newest is {newest}, "
            "so its store was replaced (or this state file followed another receiver). What happened there "
            "in between cannot be replayed. To start over from now, run again with --reset "
            f"(or delete {self.config.state_path})."
        )

    def _refused(self, status: int) -> ListenError:
        return ListenError(
            f"{self.config.source_url} refused the API token (HTTP {status}): "
            "pass the source receiver's token with --api-token or RECEIVER_API_TOKEN",
            2,
        )

    async def _check(self, response: httpx.Response) -> None:
        """Raise for an answer that is not a stream."""
        status = response.status_code
        if status in (401, 403):
            raise self._refused(status)
        if status == 409:
            newest = parse_ahead(await read_limited(response))
            if newest is None:
                raise _Retry(f"HTTP 409 from GET {self.events_url}")
            self._ahead(newest)
        if status != 200:
            raise _Retry(f"HTTP {status} from GET {self.events_url}")
        content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != "text/event-stream":
            raise _Retry(f"GET {self.events_url} answered {content_type or 'no content type'!r}, not an event stream")

    async def _probe(self, source: httpx.AsyncClient) -> int | None:
        """Ask for an id above any: a receiver answers 409 naming its newest event id (an older one, a stream:
        None). Anything else that is not a passing failure is not a receiver: ListenError, exit 2."""
        headers = {**self._auth(), "Last-Event-ID": str(ABOVE_ANY_EVENT_ID)}
        async with source.stream("GET", self.events_url, headers=headers, timeout=self._stream_timeout()) as response:
            status = response.status_code
            content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if status in (401, 403):
                raise self._refused(status)
            if status == 409:
                newest = parse_ahead(await read_limited(response))
                if newest is not None:
                    return newest
            elif status == 200 and content_type == "text/event-stream":
                return None
            elif status in (429, 502, 503, 504):  # a receiver (or its proxy) that is busy or restarting
                raise _Retry(f"HTTP {status} from GET {self.events_url}")
        raise ListenError(
            f"{self.config.source_url} is not a receiver: GET {self.events_url} answered HTTP {status} "
            f"{content_type or 'without a content type'}, not its event stream",
            2,
        )

    def _stream_timeout(self) -> httpx.Timeout:
        # The read timeout is the silence detector: keep-alive comments are bytes too.
        return httpx.Timeout(self.tuning.connect_timeout_s, read=self.tuning.silence_s)

    async def _stream(self, source: httpx.AsyncClient, local: httpx.AsyncClient) -> None:
        headers = {**self._auth(), "Accept": "text/event-stream", "Cache-Control": "no-store"}
        params: dict[str, str] = {}
        last = self.state.last_event_id
        if self._replaying_since:
            assert self.config.since is not None
            params["since"] = iso(self.config.since)
        elif last is not None:
            headers["Last-Event-ID"] = str(last)
        async with source.stream(
            "GET", self.events_url, headers=headers, params=params, timeout=self._stream_timeout()
        ) as response:
            await self._check(response)
            if params:
                self._say(f"connected, replaying since {params['since']}")
            else:
                self._say("connected" + (f", resuming after event {last}" if last is not None else ""))
            async for sse in aiter_bounded_sse(
                response, max_line=self.tuning.max_line_bytes, max_event=self.tuning.max_event_bytes, keep=200
            ):
                await self._handle(sse, local)

    def _wanted(self, event: SourceEvent) -> bool:
        config = self.config
        return (config.types is None or event.type in config.types) and (
            config.providers is None or event.provider in config.providers
        )

    async def _handle(self, sse: ServerSentEvent, local: httpx.AsyncClient) -> None:
        event_id = parse_event_id(sse)
        if event_id is None:
            self._say(f"ignored an event without a usable id ({sse.event!r})")
            return
        last = self.state.last_event_id
        if last is not None and event_id <= last and not self._replaying_since:
            return  # already forwarded
        self._replaying_since = False  # from here on, resume by event id
        try:
            event = parse_event(event_id, sse)
        except ValueError as exc:
            self._say(f"skipped event {event_id} ({sse.event}): {exc}")
        else:
            if self._wanted(event):
                await self._forward(event, local)
        self._save(self.state.after(event_id))  # a filtered-out event advances the position too
        self._healthy = True

    async def _forward(self, event: SourceEvent, local: httpx.AsyncClient) -> None:
        """POST the event until the local endpoint answers 2xx, then print its line."""
        assert self._webhook is not None
        loop = asyncio.get_running_loop()
        body = event.body()
        attempt = 0
        while True:
            started = loop.time()
            headers = {
                **signature_headers(self._webhook, event.webhook_id, body, datetime.now(UTC)),
                "user-agent": USER_AGENT,
            }
            status: int | None = None
            try:
                async with local.stream("POST", self.config.forward_url, content=body, headers=headers) as response:
                    status = response.status_code
                problem = None if 200 <= status < 300 else f"answered HTTP {status}"
            except httpx.HTTPError as exc:
                problem = f"failed ({describe(exc)})"
            millis = round((loop.time() - started) * 1000)
            if problem is None:
                stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
                print(f"{stamp} {event.type} {event.job_id} {status} {millis}ms", file=self.out, flush=True)
                return
            delay = backoff.exponential(
                attempt, base=self.tuning.backoff_base_s, cap=self.tuning.backoff_cap_s, rand=self.rand
            )
            attempt += 1
            self._say(
                f"event {event.id} ({event.type} {event.job_id}): POST {shown_url(self.config.forward_url)} "
                f"{problem} after {millis}ms; retrying in {delay:.1f} s"
            )
            await asyncio.sleep(delay)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_since(value: str, now: datetime) -> datetime:
    """`--since`: a duration before `now` (`90s`, `15m`, `2h`, `1d`, `1h30m`) or an ISO 8601 time (without
    an offset: local time); ValueError saying what is accepted."""
    text = value.strip()
    match = _DURATION.fullmatch(text.lower())
    if text and match is not None:
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        return now - timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {value!r} is neither a duration (e.g. 90s, 15m, 2h, 1d) nor an ISO 8601 time "
            "(e.g. 2026-12-01T09:30:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def parse_choices(flag: str, value: str, known: tuple[str, ...]) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(chosen - set(known))
    if not chosen or unknown:
        raise ListenError(f"{flag} {','.join(unknown) or repr(value)}: not one of {', '.join(known)}", 2)
    return chosen


# -- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="source", required=True, metavar="URL", help="the receiver to follow (its base URL)"
    )
    parser.add_argument("--forward-to", required=True, metavar="URL", help="where to POST each event")
    parser.add_argument("--api-token", metavar="T", help="the source's API token (default: RECEIVER_API_TOKEN)")
    parser.add_argument(
        "--state",
        default=DEFAULT_STATE_FILE,
        metavar="FILE",
        help=f"where the last forwarded event is kept (default {DEFAULT_STATE_FILE})",
    )
    parser.add_argument("--reset", action="store_true", help="forget the position in the state file: start from now")
    parser.add_argument(
        "--since",
        metavar="DURATION|ISO8601",
        help="first forward what happened since then (e.g. 2h, or 2026-12-01T09:30:00Z), whatever the state file says",
    )
    parser.add_argument(
        "--type",
        dest="types",
        metavar="TYPE,…",
        help=f"forward only these event types ({', '.join(EVENT_TYPES)}); the others still advance the state",
    )
    parser.add_argument(
        "--provider",
        dest="providers",
        metavar="NAME,…",
        help="forward only jobs of these providers; the others still advance the state",
    )
    parser.add_argument(
        "--silence-timeout",
        type=float,
        default=DEFAULT_TUNING.silence_s,
        metavar="S",
        help=f"reconnect a stream silent this long (default {DEFAULT_TUNING.silence_s:g})",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=DEFAULT_TUNING.backoff_cap_s,
        metavar="S",
        help="longest wait between reconnects and between retries of the local endpoint "
        f"(default {DEFAULT_TUNING.backoff_cap_s:g})",
    )


def config_from(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[ListenConfig, ListenTuning]:
    token = (args.api_token or environ.get("RECEIVER_API_TOKEN") or "").strip()
    if not token:
        raise ListenError(
            "no API token: pass --api-token or set RECEIVER_API_TOKEN "
            "(the source receiver's; `receiver info` there prints it)",
            2,
        )
    for flag, url in (("--from", args.source), ("--forward-to", args.forward_to)):
        try:
            check_callback_url(url)
        except ValueError as exc:
            raise ListenError(f"{flag} {exc}", 2) from None
    if not (args.silence_timeout > 0 and args.max_backoff > 0):
        raise ListenError("--silence-timeout and --max-backoff must be positive", 2)
    since = None
    if args.since is not None:
        try:
            since = parse_since(args.since, datetime.now(UTC))
        except ValueError as exc:
            raise ListenError(str(exc), 2) from None
    config = ListenConfig(
        source_url=args.source.rstrip("/"),
        forward_url=args.forward_to,
        api_token=token,
        state_path=Path(args.state),
        signing_secret=(environ.get("RECEIVER_SIGNING_SECRET") or "").strip() or None,
        reset=args.reset,
        since=since,
        types=None if args.types is None else parse_choices("--type", args.types, EVENT_TYPES),
        providers=None if args.providers is None else parse_choices("--provider", args.providers, PROVIDER_NAMES),
    )
    tuning = replace(
        DEFAULT_TUNING,
        silence_s=args.silence_timeout,
        backoff_cap_s=args.max_backoff,
        backoff_base_s=min(DEFAULT_TUNING.backoff_base_s, args.max_backoff),
    )
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
