"""A rolling restart behind nginx: three `receiver serve` replicas on one PostgreSQL database, behind an
nginx of the scenario's own (a subprocess with a temporary configuration on a free port; Debian's
`nginx-light` is enough), take Pixazo webhooks at a steady rate while each replica in turn is stopped with
SIGTERM and started again.

Each webhook is sent once, as a provider's first attempt: any answer but a 2xx counts as an error (a
provider would retry it, but the deploy should not cost one). Afterwards every acknowledged webhook must
be a job in the store. `config="rolling"` is the configuration docs/deploy.md recommends; `config="naive"`
is nginx's defaults for an upstream with keep-alive (retries only for idempotent requests, idle upstream
connections kept 60 s), to show what the recommended one fixes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Literal

import httpx

from tests.fakes.pixazo import completed
from tests.faults.common import Report, all_pages, api_client, hook_path
from tests.support import ReceiverProcess, free_port, postgres_database, process_env

Config = Literal["rolling", "naive"]

# What docs/deploy.md recommends, for the parts that matter to a rolling restart.
ROLLING_UPSTREAM = """
        keepalive 32;
        keepalive_timeout 4s;  # below uvicorn's timeout_keep_alive (5 s): nginx closes an idle connection first
"""
ROLLING_WEBHOOKS = """
            # Webhooks are deduplicated by the receiver: sending one again to the next replica is safe.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 15s;
"""
NAIVE_UPSTREAM = """
        keepalive 32;
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def nginx_config(workdir: Path, port: int, upstreams: list[int], config: Config) -> str:
    servers = "".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n" for p in upstreams)
    temp = "".join(
        f"    {name}_temp_path {workdir}/{name};\n" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    upstream receiver {{
{servers}{ROLLING_UPSTREAM if config == "rolling" else NAIVE_UPSTREAM}
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        location /webhooks/ {{
            proxy_pass http://receiver;
{ROLLING_WEBHOOKS if config == "rolling" else ""}
        }}
        location / {{
            proxy_pass http://receiver;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground (`daemon off`), as a child process with its own prefix and configuration."""

    def __init__(self, workdir: Path, upstreams: list[int], config: Config) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(nginx_config(workdir, self.port, upstreams, config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.workdir), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.errors()}")
            try:
                httpx.get(f"{self.base_url}/healthz", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(f"nginx did not answer: {self.errors()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def errors(self) -> str:
        path = self.workdir / "nginx-error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


async def rolling_restart_behind_nginx(
    workdir: Path,
    *,
    replicas: int = 3,
    rate: float = 300.0,
    rounds: int = 1,
    gap_s: float = 2.0,
    config: Config = "rolling",
    max_in_flight: int = 256,
) -> Report:
    report = Report(f"{replicas} replicas behind nginx ({config} config), restarted in turn under {rate:g} webhooks/s")
    started = time.monotonic()
    async with postgres_database() as url:
        env = process_env(
            workdir,
            RECEIVER_DATABASE_URL=url,
            RECEIVER_LOG_FORMAT="json",
            RECEIVER_LOG_LEVEL="WARNING",
            RECEIVER_ACCESS_LOG="off",
        )
        daemons = [ReceiverProcess(env, log_path=workdir / f"replica{i}.log") for i in range(replicas)]
        nginx: Nginx | None = None
        try:
            for daemon in daemons:
                await asyncio.to_thread(daemon.start)
            nginx = await asyncio.to_thread(Nginx(workdir, [d.port for d in daemons], config).start)
            load = SteadyLoad(nginx.base_url, rate, max_in_flight)
            runner = asyncio.create_task(load.run())
            await asyncio.sleep(gap_s)
            restarts: list[float] = []
            for _ in range(rounds):
                for daemon in daemons:
                    begun = time.monotonic()
                    await asyncio.to_thread(daemon.stop)  # SIGTERM; uvicorn drains, then exits
                    await asyncio.to_thread(daemon.start)
                    restarts.append(time.monotonic() - begun)
                    await asyncio.sleep(gap_s)
            load.stopping = True
            await runner
            async with api_client(daemons[0].base_url) as api:
                stored = {job["provider_job_id"] for job in await all_pages(api, "/v1/jobs", "jobs", provider="pixazo")}
            lost = sorted(set(load.acked) - stored)
            report.figures.update(
                {
                    "webhooks sent": load.sent,
                    "achieved rate, /s": round(load.sent / max(load.elapsed_s, 1e-9), 1),
                    "acknowledged (2xx)": len(load.acked),
                    "errors (non-2xx answers)": sum(load.statuses.values()),
                    "errors (no answer)": sum(load.failures.values()),
                    "acknowledged but missing from the store": len(lost),
                    "restarts": len(restarts),
                    "restart (SIGTERM → healthy again), s max": round(max(restarts, default=0.0), 2),
                    "latency p50 / p99 / max, ms": load.percentiles(),
                }
            )
            if load.statuses:
                report.figures["non-2xx answers by status"] = dict(sorted(load.statuses.items()))
            if load.failures:
                report.figures["failures by kind"] = dict(load.failures)
            report.check(not lost, f"{len(lost)} acknowledged webhooks missing from the store, e.g. {lost[:3]}")
            report.check(
                not load.statuses and not load.failures,
                f"{sum(load.statuses.values()) + sum(load.failures.values())} webhooks not acknowledged "
                "on their first attempt",
            )
        finally:
            if nginx is not None:
                await asyncio.to_thread(nginx.stop)
            for daemon in daemons:
                await asyncio.to_thread(daemon.stop)
    report.elapsed_s = time.monotonic() - started
    return report


class SteadyLoad:
    """Webhooks at a fixed rate (open loop: each is sent at its time, whatever the ones before it are doing),
    each once, over keep-alive connections to `base_url`."""

    def __init__(self, base_url: str, rate: float, max_in_flight: int) -> None:
        self.base_url = base_url
        self.rate = rate
        self.slots = asyncio.Semaphore(max_in_flight)
        self.stopping = False
        self.sent = 0
        self.elapsed_s = 0.0
        self.acked: set[str] = set()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.latencies: list[float] = []
        self.prefix = f"roll{uuid.uuid4().hex[:6]}"

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits) as client:
            begun = loop.time()
            tasks: set[asyncio.Task[None]] = set()
            while not self.stopping:
                due = begun + self.sent / self.rate
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await self.slots.acquire()
                self.sent += 1
                task = asyncio.create_task(self._send(client, f"{self.prefix}_{self.sent}"))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            self.elapsed_s = loop.time() - begun
            await asyncio.gather(*tasks)

    async def _send(self, client: httpx.AsyncClient, request_id: str) -> None:
        loop = asyncio.get_running_loop()
        begun = loop.time()
        try:
            response = await client.post(
                hook_path("pixazo"),
                content=json.dumps(completed(request_id)),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            self.failures[type(exc).__name__] += 1
        else:
            if 200 <= response.status_code < 300:
                self.acked.add(request_id)
            else:
                self.statuses[response.status_code] += 1
        finally:
            self.latencies.append(loop.time() - begun)
            self.slots.release()

    def percentiles(self) -> str:
        if not self.latencies:
            return "-"
        ordered = sorted(self.latencies)
        pick = [ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 for q in (0.5, 0.99)]
        return f"{pick[0]:.1f} / {pick[1]:.1f} / {ordered[-1] * 1000:.1f}"


class ResettingUpstream:
    """A stand-in for a replica closing an idle keep-alive connection just as nginx reuses it: on each
    connection the first request is answered 200 (keep-alive), the next one gets a TCP reset instead of an
    answer. Deterministic, where the real race (uvicorn's keep-alive timeout, a SIGTERM) is a matter of
    microseconds."""

    def __init__(self) -> None:
        self.port = 0
        self.answered = 0
        self.reset = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> ResettingUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import socket
        import struct

        try:
            for number in (1, 2):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                if number == 1:
                    self.answered += 1
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
                        b"connection: keep-alive\r\n\r\n{}"
                    )
                    await writer.drain()
                else:
                    self.reset += 1
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
                    writer.transport.abort()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def reset_on_reuse(workdir: Path, config: Config, *, requests: int = 12) -> Report:
    """nginx in front of a ResettingUpstream and a real replica: how many of `requests` webhooks, sent one
    after another, come back as an error."""
    report = Report(f"nginx ({config} config): a kept-alive upstream connection reset on reuse")
    started = time.monotonic()
    fake = await ResettingUpstream().start()
    daemon = ReceiverProcess(process_env(workdir), log_path=workdir / "replica.log")
    nginx: Nginx | None = None
    try:
        await asyncio.to_thread(daemon.start)
        nginx = await asyncio.to_thread(Nginx(workdir, [fake.port, daemon.port], config).start)
        statuses: collections.Counter[int] = collections.Counter()
        async with httpx.AsyncClient(base_url=nginx.base_url, timeout=30) as client:
            for number in range(requests):
                request_id = f"reset{uuid.uuid4().hex[:6]}_{number}"
                response = await client.post(
                    hook_path("pixazo"),
                    content=json.dumps(completed(request_id)),
                    headers={"content-type": "application/json"},
                )
                statuses[response.status_code] += 1
        errors = sum(n for status, n in statuses.items() if not 200 <= status < 300)
        report.figures.update(
            {
                "webhooks": requests,
                "resets on reuse": fake.reset,
                "answered by status": dict(sorted(statuses.items())),
                "errors": errors,
            }
        )
        report.check(fake.reset > 0, "the resetting upstream was never reused: nothing was tested")
        report.check(errors == 0, f"{errors} webhooks answered with an error")
    finally:
        if nginx is not None:
            await asyncio.to_thread(nginx.stop)
        await asyncio.to_thread(daemon.stop)
        await fake.close()
    report.elapsed_s = time.monotonic() - started
    return report
