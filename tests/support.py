"""Test plumbing: real uvicorn servers on loopback, in-process or as a separate process (shared with `scripts`)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    Self,
    TypeVar,
    overload,
)

import httpx
import uvicorn

from receiver.settings import Settings
from receiver.web.server import server_config

if TYPE_CHECKING:
    import pytest

API_TOKEN = "test-api-token"
WEBHOOK_TOKEN = "test-webhook-token"
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


T = TypeVar("T")


@overload
async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = ..., what: str = ...) -> T: ...
@overload
async def eventually(check: Callable[[], T | None], timeout: float = ..., what: str = ...) -> T: ...
async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Re-run `check` (sync or async) until it returns something truthy, and return that; fail after `timeout`
    with its last value. The one poll-until of the tests: generous by default, since a busy machine is slow."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s (last: {value!r})")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: its own SQLite file, known tokens, fast schedules."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'receiver.db'}",
        "api_token": API_TOKEN,
        "webhook_token": WEBHOOK_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "retry_schedule": (0.05, 0.1, 0.2),
        "callback_timeout_s": 2,
        "media_url": "off",  # tests that mirror set a directory (or s3://) of their own
    }
    values.update(overrides)
    return Settings.model_validate(values)  # these values only: not the environment, nor a .env file


class RunningServer:
    def __init__(self, app: Any, base_url: str) -> None:
        self.app = app
        self.base_url = base_url

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, **{"timeout": 10, **kwargs})

    def api(self) -> httpx.AsyncClient:
        return self.client(headers={"Authorization": f"Bearer {API_TOKEN}"})


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, sock: socket.socket | None = None, **bounds: Any) -> AsyncIterator[RunningServer]:
    """Run an ASGI app on a real uvicorn server on 127.0.0.1 in this event loop, configured as `receiver
    serve` configures it (`bounds`: see receiver.web.server.server_config)."""
    if sock is None:
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it every
        # keep-alive request waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1, **bounds)
    server = uvicorn.Server(config)
    setattr(server, "install_signal_handlers", lambda: None)  # noqa: B010  (older uvicorn; newer ones have none)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during startup")
        if time.monotonic() > deadline:
            raise TimeoutError("server did not start")
        await asyncio.sleep(0.01)
    try:
        yield RunningServer(app, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@contextlib.asynccontextmanager
async def loopback_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], *, wait_closed_s: float = 0.0
) -> AsyncIterator[int]:
    """A raw TCP server (asyncio streams) on 127.0.0.1 and a free port, which it yields; closed afterwards,
    waiting up to `wait_closed_s` for its connections to end."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        if wait_closed_s > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), wait_closed_s)


def webhook_path(provider: str, token: str | None = WEBHOOK_TOKEN) -> str:
    """`/webhooks/<provider>?token=…` on any receiver's base URL; without the token when `token` is None."""
    return f"/webhooks/{provider}" + (f"?token={token}" if token is not None else "")


def api_client(base_url: str, **kwargs: Any) -> httpx.AsyncClient:
    """A client of the /v1 API at `base_url`, with the tests' bearer token."""
    return httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30, **kwargs)


@contextlib.asynccontextmanager
async def _api(target: httpx.AsyncClient | RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    if isinstance(target, RunningServer):
        async with target.api() as api:
            yield api
    else:
        yield target


async def register_job(
    target: httpx.AsyncClient | RunningServer,
    provider_job_id: str,
    *,
    provider: str = "pixazo",
    expect: Sequence[int] = (200, 201),
    **fields: Any,
) -> dict[str, Any]:
    """`POST /v1/jobs` (through an API client, or a server's) answered with a status in `expect`: the job."""
    async with _api(target) as api:
        reply = await api.post("/v1/jobs", json={"provider": provider, "provider_job_id": provider_job_id, **fields})
    assert reply.status_code in expect, reply.text
    job: dict[str, Any] = reply.json()
    return job


async def list_receipts(target: httpx.AsyncClient | RunningServer, **params: str) -> list[dict[str, Any]]:
    """The first page of `GET /v1/receipts` with these filters, newest first."""
    async with _api(target) as api:
        reply = await api.get("/v1/receipts", params=params)
    assert reply.status_code == 200, reply.text
    return list(reply.json()["receipts"])


class ServerProcess:
    """A server in a process of its own, started with `args` (`{port}` in them becomes its port) and healthy
    once `GET /healthz` answers 200. Shared by the tests, the fault scenarios and the benchmarks.

    Its output goes to `log_path` (appended), else to a temporary file: never to a pipe, which nobody reads
    and which, once full under load, blocks the server on its next log line. `env` is its whole environment.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        port: int | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        name: str = "server",
    ) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.port = port or free_port()
        self.cwd = cwd
        self.log_path = log_path
        self.name = name
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in_s = 0.0  # how long the last start took, until /healthz answered
        self._log: IO[bytes] = open(log_path, "ab") if log_path is not None else tempfile.TemporaryFile()
        weakref.finalize(self, self._log.close)  # output() may be read after stop(): closed with the object

    def start(self, timeout: float = 30) -> Self:
        """Start it (again, on the same port) and wait until /healthz answers."""
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [arg.replace("{port}", str(self.port)) for arg in self.args],
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-4000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=0.5).status_code == 200:
                    self.started_in_s = time.monotonic() - started
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"{self.name} did not answer /healthz within {timeout:g} s:\n{self.output()[-4000:]}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM, then its exit status; SIGKILL (-9) when it has not exited within 15 s."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
                return -9
        return self.proc.returncode if self.proc else 0

    def output(self) -> str:
        """Everything it printed so far."""
        self._log.flush()
        if self.log_path is not None:
            return self.log_path.read_text(errors="replace")
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def memory_kib(self) -> dict[str, int]:
        """Its resident set size now (VmRSS) and at its peak so far (VmHWM), in KiB (Linux)."""
        assert self.proc is not None
        values: dict[str, int] = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
        return values

    def cpu_seconds(self) -> float:
        """User + system CPU time it has used so far, all threads (Linux)."""
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far, all threads (Linux; OSError once it is gone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ReceiverProcess(ServerProcess):
    """`receiver serve` in its own process, for restarts and SIGKILL; `env` on top of this one's."""

    def __init__(
        self, env: Mapping[str, str], port: int | None = None, cwd: Path | None = None, log_path: Path | None = None
    ) -> None:
        super().__init__(
            [sys.executable, "-m", "receiver", "serve", "--port", "{port}"],
            {**os.environ, **env},
            port=port,
            cwd=cwd,
            log_path=log_path,
            name="receiver",
        )


def process_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'receiver.db'}",
        "RECEIVER_API_TOKEN": API_TOKEN,
        "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "RECEIVER_SIGNING_SECRET": SIGNING_SECRET,
        "RECEIVER_RETRY_SCHEDULE": "0.05,0.1,0.2",
        "RECEIVER_CALLBACK_TIMEOUT_S": "2",
        "RECEIVER_TUNNEL_DISCOVERY": "off",  # a tunnel running on the machine must not change the tests
        "RECEIVER_MEDIA_URL": "off",  # tests that mirror set a directory (or s3://) of their own
    }
    env.update(extra)
    return env


# -- PostgreSQL: a database per test ------------------------------------------------------------

POSTGRES_ADMIN_URL = os.environ.get("RECEIVER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
POSTGRES_REQUIRED = os.environ.get("RECEIVER_REQUIRE_POSTGRES") == "1"


async def postgres_reachable() -> str | None:
    """None when the test server answers, else why not."""
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
    except Exception as exc:  # any reason at all means: no server to test against
        return f"no PostgreSQL at {POSTGRES_ADMIN_URL} ({type(exc).__name__}: {exc})"
    await conn.close()
    return None


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh database on the test server, dropped afterwards; yields its URL."""
    import uuid

    import asyncpg

    name = f"receiver_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# An output's mirror fields while it is not mirrored (always so with RECEIVER_MEDIA_URL=off).
UNMIRRORED = {"stored_url": None, "sha256": None, "bytes": None, "mirror_error": None}


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages logged at ERROR or above (with the `errors_logged` fixture: uvicorn's too)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
