"""Building blocks of `python -m scripts.bench`: served apps as processes, load generators, lean local
endpoints (callback sink, Oxen event stream), store prefill and counts. Everything stays on 127.0.0.1.

The process runner, ports, tokens and secrets are the tests' (`tests.support`); the endpoints here are
raw asyncio protocols instead of the tests' Starlette fakes, so that they cost the measured server little.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from receiver.store.sqlite.store import SQLiteStore
from tests.fakes.oxen import API_KEY as OXEN_KEY
from tests.support import API_TOKEN, SIGNING_SECRET, WEBHOOK_TOKEN, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
HOOK_PATH = f"/webhooks/pixazo?token={WEBHOOK_TOKEN}"

# One command line for every served app (receiver and bare endpoint alike): only the app differs.
UVICORN_OPTIONS = (
    "--host",
    "127.0.0.1",
    "--log-level",
    "warning",
    "--no-server-header",
    "--timeout-graceful-shutdown",
    "5",
)
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:[ \t]*(\d+)")


def pixazo_webhook(request_id: str) -> bytes:
    """A Pixazo completion webhook, as Pixazo documents it (compact: the same bytes on every run)."""
    return json.dumps(
        {
            "request_id": request_id,
            "status": "COMPLETED",
            "model_id": "grok-imagine-pro-text-to-image-quality",
            "error": None,
            "output": {"media_url": [f"https://cdn.pixazo.ai/{request_id}/output.jpeg"], "media_type": "image/jpeg"},
        },
        separators=(",", ":"),
    ).encode()


def oxen_event(generation_id: str) -> bytes:
    """One `media_generation_completed` event of Oxen's stream (success data)."""
    data = json.dumps(
        {
            "generation_id": generation_id,
            "status": "succeeded",
            "media_type": "image",
            "model": "xai-grok-imagine-image",
            "url": f"https://cdn.oxen.ai/generations/{generation_id}.png?X-Amz-Signature=abc",
        },
        separators=(",", ":"),
    )
    return f"event: media_generation_completed\ndata: {data}\n\n".encode()


# -- served apps -------------------------------------------------------------------------------------


def receiver_env(db_path: Path, **extra: str) -> dict[str, str]:
    """The receiver's settings for a run: its own SQLite file, known tokens, nothing from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    env.update(
        {
            "RECEIVER_DATABASE_URL": f"sqlite:///{db_path.resolve()}",
            "RECEIVER_API_TOKEN": API_TOKEN,
            "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "RECEIVER_SIGNING_SECRET": SIGNING_SECRET,
            "RECEIVER_LOG_LEVEL": "WARNING",
            "RECEIVER_MEDIA_URL": "off",  # the media bench turns it on; elsewhere results are not fetched
        }
    )
    env.update(extra)
    return env


class Served(ServerProcess):
    """One ASGI app served by its own `python -m uvicorn` process on a loopback port, from the repository root
    (`app` such as `receiver.app:create_app` or `scripts.bare_app:app`); `cli`: `receiver serve` instead (its
    own logging set-up). Its output goes to `workdir/<name>.log`."""

    def __init__(
        self,
        name: str,
        app: str,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        factory: bool = False,
        cli: bool = False,
    ) -> None:
        if cli:
            args = [sys.executable, "-m", "receiver", "serve", "--host", "127.0.0.1", "--port", "{port}"]
        else:
            args = [sys.executable, "-m", "uvicorn", app, "--port", "{port}", *UVICORN_OPTIONS]
            if factory:
                args.append("--factory")
        super().__init__(
            args, env if env is not None else os.environ, cwd=ROOT, log_path=workdir / f"{name}.log", name=name
        )

    def start(self, timeout: float = 60.0) -> Served:
        return super().start(timeout)

    def log_text(self) -> str:
        return self.output()[-4000:]

    def peak_memory_mib(self) -> float:
        """VmHWM: the process's peak resident set size so far."""
        return self.memory_kib()["VmHWM"] / 1024


def get_json(url: str, *, token: str | None = None, timeout: float = 10.0) -> object:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


# -- load: results ----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """One closed-loop run against one server."""

    generator: str
    seconds: float
    ok: int  # 2xx answers
    failed: int  # other answers and socket errors
    unanswered: int  # requests written whose answer the generator stopped waiting for (wrk, at the end)
    p50_ms: float
    p99_ms: float
    cpu_s: float = 0.0  # CPU time the server used meanwhile

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.ok * 1e6 if self.ok else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- load: wrk ---------------------------------------------------------------------------------------

_WRK_LUA = r"""
-- Unique Pixazo webhooks for wrk: one request id per request, counted per thread.
prefix = os.getenv("BENCH_PREFIX") or "bench"
template = [[@TEMPLATE@]]
counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local id = string.format("%s-%d-%d", prefix, tid, counter)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, string.format(template, id, id))
end

function done(summary, latency, requests)
  local built = 0
  for _, t in ipairs(threads) do built = built + t:get("counter") end
  -- wrk builds one extra request on the first thread before the run, to check the script.
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"built":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, built - 1, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_script(workdir: Path) -> Path:
    path = workdir / "webhooks.lua"
    if not path.exists():
        template = pixazo_webhook("@ID@").decode().replace("%", "%%").replace("@ID@", "%s")
        path.write_text(_WRK_LUA.replace("@TEMPLATE@", template))
    return path


def run_wrk(url: str, *, prefix: str, seconds: float, connections: int, workdir: Path) -> LoadResult:
    """`wrk -t1` with unique ids; `unanswered` are the requests still in flight when wrk stopped."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(wrk_script(workdir)),
        url,
    ]
    done = subprocess.run(
        cmd, env={**os.environ, "BENCH_PREFIX": prefix}, capture_output=True, text=True, timeout=seconds + 60
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    r = json.loads(line[len("WRKJSON ") :])
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return LoadResult(
        generator="wrk",
        seconds=r["duration_us"] / 1e6,
        ok=r["requests"] - r["status"],
        failed=r["status"] + errors,
        unanswered=max(0, r["built"] - r["requests"]),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
    )


# -- load: built-in asyncio generators (raw HTTP/1.1 keep-alive) ---------------------------------------


def http_post(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request, read its whole answer (content-length framed); returns the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    found = _CONTENT_LENGTH.search(head)
    if found:
        await reader.readexactly(int(found.group(1)))
    return int(head[9:12])


async def closed_loop(
    port: int, path: str, make_body: Callable[[str], bytes], *, prefix: str, seconds: float, connections: int
) -> LoadResult:
    """Each connection sends its next request as soon as the previous answer is in; drains at the end."""
    latencies: list[float] = []
    ok = failed = 0
    stop_at = time.perf_counter() + seconds

    async def worker(number: int) -> None:
        nonlocal ok, failed
        conn = None
        sent = 0
        while time.perf_counter() < stop_at:
            sent += 1
            request = http_post(port, path, make_body(f"{prefix}-{number}-{sent}"))
            try:
                conn = conn or await _connect(port)
                started = time.perf_counter()
                status = await _exchange(*conn, request)
                latencies.append(time.perf_counter() - started)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                failed += 1
                conn = None
                continue
            if 200 <= status < 300:
                ok += 1
            else:
                failed += 1
        if conn is not None:
            conn[1].close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(connections)))
    return LoadResult(
        "built-in",
        time.perf_counter() - started,
        ok,
        failed,
        0,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
    )


@dataclass
class Sent:
    key: str
    scheduled_at: float
    sent_at: float = 0.0
    answered_at: float | None = None
    status: int | None = None


async def open_loop(
    port: int,
    path: str,
    make_body: Callable[[str], bytes],
    keys: Sequence[str],
    *,
    rate: float,
    max_connections: int = 512,
) -> list[Sent]:
    """Send one request per key at a fixed rate, whatever the answers do (a new connection when all are busy)."""
    idle = [await _connect(port) for _ in range(min(16, max_connections))]
    slots = asyncio.Semaphore(max_connections)
    records: list[Sent] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(record: Sent, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        request = http_post(port, path, make_body(record.key))
        record.sent_at = time.perf_counter()
        try:
            # A kept-alive connection the server closed meanwhile fails at once: send again on a new one
            # (same id, so a repeat changes nothing).
            for fresh in (conn is None, True):
                if fresh:
                    conn = await _connect(port)
                assert conn is not None
                try:
                    record.status = await _exchange(*conn, request)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    conn[1].close()
                    if fresh:
                        return
                    continue
                record.answered_at = time.perf_counter()
                idle.append(conn)
                return
        except OSError:
            pass
        finally:
            slots.release()

    start = time.perf_counter() + 0.02
    for i, key in enumerate(keys):
        record = Sent(key, start + i / rate)
        delay = record.scheduled_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        records.append(record)
        task = asyncio.create_task(one(record, idle.pop() if idle else None))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*list(tasks))
    for _, writer in idle:
        writer.close()
    return records


# -- local endpoints: the downstream callback sink, Oxen's event stream ---------------------------------


class _HTTPServerProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 server: content-length framed requests, keep-alive, one handler call each."""

    def __init__(self, handle: Callable[[_HTTPServerProtocol, bytes, bytes], None]) -> None:
        self.handle = handle
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[: end + 2])
            found = _CONTENT_LENGTH.search(head)
            total = end + 4 + (int(found.group(1)) if found else 0)
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            self.handle(self, head, body)

    def answer(self, status: str, body: bytes = b"", content_type: str = "text/plain") -> None:
        assert self.transport is not None
        self.transport.write(
            f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body
        )


class CallbackSink:
    """A downstream callback endpoint: answers every POST 200 and notes when each job's callback arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # provider_job_id → perf_counter() at arrival
        self.duplicates = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> CallbackSink:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _HTTPServerProtocol(self._handle), "127.0.0.1", 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _handle(self, proto: _HTTPServerProtocol, head: bytes, body: bytes) -> None:
        at = time.perf_counter()
        key = json.loads(body)["data"]["provider_job_id"]
        if key in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[key] = at
        proto.answer("200 OK", b"ok")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


class OxenStream:
    """Oxen's `GET /api/events` on loopback: events are written as fast as the socket takes them.

    Status polls (`GET /api/ai/queue/{id}`) get Oxen's 404: the benchmark has no pending jobs to catch up on.
    """

    def __init__(self, api_key: str = OXEN_KEY) -> None:
        self.api_key = api_key
        self.port = 0
        self.stream: asyncio.Transport | None = None
        self.connected = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> OxenStream:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _HTTPServerProtocol(self._handle), "127.0.0.1", 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _handle(self, proto: _HTTPServerProtocol, head: bytes, body: bytes) -> None:
        target = head.split(b" ", 2)[1]
        authorized = f"\r\nauthorization: bearer {self.api_key}\r\n".encode() in head.lower()
        if not authorized:
            proto.answer("401 Unauthorized", b'{"status":"error","status_message":"unauthorized"}', "application/json")
        elif target.startswith(b"/api/events") and proto.transport is not None:
            proto.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            self.stream = proto.transport
            self.connected.set()
        else:
            proto.answer(
                "404 Not Found", b'{"error":{"type":"resource_not_found"},"status":"error"}', "application/json"
            )

    def send(self, data: bytes, chunk: int = 65536) -> None:
        """Write events to the open stream (chunked transfer encoding); the transport buffers the rest."""
        assert self.stream is not None, "no stream connected"
        for i in range(0, len(data), chunk):
            piece = data[i : i + chunk]
            self.stream.write(b"%x\r\n%s\r\n" % (len(piece), piece))

    async def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        if self._server is not None:
            self._server.close()


# -- the store --------------------------------------------------------------------------------------

_PREFILL_JOBS = """
INSERT INTO jobs (id, provider, provider_job_id, status, outputs, error, metadata, callback_url, registered,
                  expected_outputs, delivery_status, created_at, completed_at, next_poll_at)
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
SELECT 'job_' || lower(hex(randomblob(16))),
       CASE i % 4 WHEN 0 THEN 'pixazo' WHEN 1 THEN 'runware' WHEN 2 THEN 'apiframe' ELSE 'oxen' END,
       'prefill-' || lower(hex(randomblob(12))), 'succeeded',
       '[{"url":"https://cdn.example.com/' || i || '/output.jpeg","media_type":"image/jpeg","key":null}]',
       NULL, '{}', NULL, 0, NULL, 'none', :t0 + i * 0.01, :t0 + i * 0.01 + 5, NULL
FROM n
"""
_PREFILL_RECEIPTS = """
INSERT INTO receipts (provider, source, outcome, provider_job_ids, error, headers, body, received_at)
SELECT provider, 'webhook', 'applied', json_array(provider_job_id), NULL, '{"content-type":"application/json"}',
       CAST(json_object('request_id', provider_job_id, 'status', 'COMPLETED', 'output',
            json_object('media_url', json_array('https://cdn.example.com/output.jpeg'), 'media_type', 'image/jpeg'))
            AS BLOB),
       completed_at
FROM jobs ORDER BY seq
"""
_PREFILL_EVENTS = """
INSERT INTO events (job_id, type, data, created_at)
SELECT id, 'job.succeeded',
       json_object('id', id, 'provider', provider, 'provider_job_id', provider_job_id, 'status', status,
                   'outputs', json(outputs), 'error', NULL, 'metadata', json('{}'), 'callback_url', NULL,
                   'delivery_status', delivery_status, 'created_at', '2026-01-01T00:00:00Z',
                   'completed_at', '2026-01-01T00:00:05Z'),
       completed_at
FROM jobs ORDER BY seq
"""


def prefill_store(path: Path, jobs: int) -> None:
    """A store as `receiver.store.schema` makes it, holding `jobs` finished jobs, each with its receipt and event.

    Plain SQL in bulk (no journal while filling), then WAL as the receiver keeps it.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1000000"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("BEGIN")
        SQLiteStore._migrate(conn)  # the schema exactly as the receiver makes it, version included
        if jobs:
            conn.execute(_PREFILL_JOBS, {"count": jobs, "t0": time.time() - 86400 * 30})
            conn.execute(_PREFILL_RECEIPTS)
            conn.execute(_PREFILL_EVENTS)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def count_rows(path: Path, sql: str, params: Iterable[object] = ()) -> int:
    """One COUNT from the store file, read-only, beside the running receiver (WAL allows it)."""
    conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute(sql, tuple(params)).fetchone()[0])
    finally:
        conn.close()


def count_jobs(path: Path, provider: str) -> int:
    return count_rows(path, "SELECT COUNT(*) FROM jobs WHERE provider = ?", (provider,))


# -- the machine ------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }
