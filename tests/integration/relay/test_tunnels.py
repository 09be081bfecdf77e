"""Finding a local ngrok or cloudflared tunnel: fake agent APIs on free loopback ports, `receiver info`
and `receiver serve` as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.relay.tunnels import Tunnel, TunnelProbe, addr_port, cloudflared_tunnel, discover, ngrok_tunnel
from receiver.store import open_store
from tests.support import free_port, process_env, serve_app

NGROK_URL = "https://3f2a-203-0-113-7.ngrok-free.app"
CLOUDFLARED_HOST = "tiny-river-lamp.trycloudflare.com"


def ngrok_answer(port: int) -> dict[str, Any]:
    """An agent with a tunnel to another port, an http twin of ours, and ours."""
    return {
        "tunnels": [
            {"public_url": "https://other.ngrok-free.app", "proto": "https", "config": {"addr": "http://localhost:9"}},
            {"public_url": f"http://{NGROK_URL[8:]}", "proto": "http", "config": {"addr": f"http://localhost:{port}"}},
            {"public_url": NGROK_URL, "proto": "https", "config": {"addr": f"http://localhost:{port}"}},
        ],
        "uri": "/api/tunnels",
    }


class FakeAgents:
    """An ngrok agent API and a cloudflared metrics server in one app; each can be absent or hang."""

    def __init__(self, port: int) -> None:
        self.ngrok: dict[str, Any] | None = ngrok_answer(port)
        self.quicktunnel: dict[str, Any] | None = {"hostname": CLOUDFLARED_HOST}
        self.hang = False
        self.released = asyncio.Event()  # ends hanging requests, so the server can stop
        self.app = Starlette(routes=[Route("/api/tunnels", self._tunnels), Route("/quicktunnel", self._quick)])

    async def _answer(self, body: dict[str, Any] | None) -> Response:
        if self.hang:
            await self.released.wait()
            return Response(status_code=503)
        return JSONResponse(body) if body is not None else Response(status_code=404)

    async def _tunnels(self, request: Request) -> Response:
        return await self._answer(self.ngrok)

    async def _quick(self, request: Request) -> Response:
        return await self._answer(self.quicktunnel)


@contextlib.asynccontextmanager
async def agents(port: int) -> AsyncIterator[tuple[FakeAgents, str]]:
    fake = FakeAgents(port)
    async with serve_app(fake.app) as running:
        try:
            yield fake, running.base_url
        finally:
            fake.released.set()


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def probe(ngrok: str | None = None, cloudflared: str | None = None) -> TunnelProbe:
    return TunnelProbe(
        ngrok_api_url=ngrok or closed_url(), cloudflared_metrics_urls=(cloudflared or closed_url(), closed_url())
    )


def test_addr_port_reads_every_form_ngrok_writes() -> None:
    for addr in (
        "8000",
        8000,
        "localhost:8000",
        "http://localhost:8000",
        "127.0.0.1:8000",
        "https://127.0.0.1:8000",
        "http://[::1]:8000",
        "0.0.0.0:8000",
    ):
        assert addr_port(addr) == 8000, addr
    assert addr_port("https://localhost") == 443 and addr_port("http://localhost") == 80
    elsewhere: tuple[object, ...] = (
        "192.0.2.10:8000",
        "http://example.com:8000",
        "file:///srv",
        "",
        None,
        True,
        "localhost:99999",
        "x:y",
    )
    for other in elsewhere:
        assert addr_port(other) is None, other


def test_parsing_agent_answers() -> None:
    assert ngrok_tunnel(orjson.dumps(ngrok_answer(8000)), 8000) == NGROK_URL
    assert ngrok_tunnel(orjson.dumps(ngrok_answer(8000)), 8001) is None
    assert ngrok_tunnel(orjson.dumps(ngrok_answer(9)), 9) == "https://other.ngrok-free.app"
    for bad in (b"not json", b"[]", b'{"tunnels": 5}', b'{"tunnels": [1, {"public_url": "https://x.io"}]}'):
        assert ngrok_tunnel(bad, 8000) is None
    assert cloudflared_tunnel(b'{"hostname": "Tiny-River.trycloudflare.com"}') == "https://tiny-river.trycloudflare.com"
    for bad in (b'{"hostname": ""}', b'{"hostname": "evil.com/path"}', b'{"hostname": "a b.com"}', b"{}", b"x"):
        assert cloudflared_tunnel(bad) is None


async def test_discover_takes_ngroks_tunnel_to_our_port_over_cloudflared() -> None:
    async with agents(8000) as (fake, url):
        assert await discover(8000, probe(url, url)) == Tunnel(NGROK_URL, "ngrok", port_checked=True)
        # A tunnel to another port is not ours: cloudflared's quick tunnel then, said to be unchecked.
        found = await discover(8001, probe(url, url))
        assert found == Tunnel(f"https://{CLOUDFLARED_HOST}", "cloudflared", port_checked=False)
        assert "does not say where it leads" in found.describe(8001)
        fake.quicktunnel = None
        assert await discover(8001, probe(url, url)) is None
    assert await discover(8000, probe()) is None  # nothing running at all


async def test_an_unresponsive_agent_does_not_hold_up_start() -> None:
    async with agents(8000) as (hanging, slow), agents(8000) as (_, quick):
        hanging.hang = True
        started = time.monotonic()
        assert await discover(8000, probe(slow, slow)) is None
        assert time.monotonic() - started < 3  # the probe gives up after 0.3 s; generous for a busy machine
        # One agent hanging does not hide another that answers.
        assert await discover(8000, probe(slow, quick)) == Tunnel(f"https://{CLOUDFLARED_HOST}", "cloudflared", False)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    env = {**base, **process_env(tmp_path), **extra}
    del env["RECEIVER_TUNNEL_DISCOVERY"]
    return env


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    if args[0] == "info":  # info reads the store a server made; it never creates one
        await (await open_store(env["RECEIVER_DATABASE_URL"])).close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "receiver",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_info_shows_the_discovered_url(tmp_path: Path) -> None:
    async with agents(8123) as (fake, url):
        env = cli_env(tmp_path, RECEIVER_NGROK_API_URL=url, RECEIVER_CLOUDFLARED_METRICS_URLS=closed_url())
        code, out = await run_cli(env, "info", "--port", "8123")
        assert code == 0, out
        assert f"{NGROK_URL}/webhooks/pixazo?token=" in out and "ngrok tunnel to port 8123" in out

        code, out = await run_cli(env, "info", "--port", "8124")  # the agent's tunnels lead elsewhere
        assert code == 0, out
        assert "http://127.0.0.1:8124/webhooks/pixazo?token=" in out and "tunnel to port" not in out
        assert "no tunnel was found" in out  # and it says these URLs are local only

        env_cf = {
            **env,
            "RECEIVER_NGROK_API_URL": closed_url(),
            "RECEIVER_CLOUDFLARED_METRICS_URLS": f"{closed_url()},{url}",
        }
        code, out = await run_cli(env_cf, "info", "--port", "8124")
        assert code == 0 and f"https://{CLOUDFLARED_HOST}/webhooks/runware?token=" in out and "cloudflared" in out

        for env_off in (
            {**env, "RECEIVER_TUNNEL_DISCOVERY": "off"},
            {**env, "RECEIVER_PUBLIC_URL": "https://mine.example"},
        ):
            code, out = await run_cli(env_off, "info", "--port", "8123")
            assert code == 0 and NGROK_URL not in out and "tunnel to port" not in out


async def test_serve_uses_and_logs_the_discovered_url(tmp_path: Path) -> None:
    port = free_port()
    async with agents(port) as (_, url):
        env = cli_env(tmp_path, RECEIVER_NGROK_API_URL=url, RECEIVER_CLOUDFLARED_METRICS_URLS=closed_url())
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "receiver",
            "serve",
            "--port",
            str(port),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with httpx.AsyncClient() as client:
                deadline = time.monotonic() + 20
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    assert time.monotonic() < deadline and proc.returncode is None, "serve did not start"
                    await asyncio.sleep(0.05)
        finally:
            proc.terminate()
            out, _ = await asyncio.wait_for(proc.communicate(), 20)
    log = out.decode()
    assert f"public URL from a local tunnel: {NGROK_URL} (an ngrok tunnel to port {port})" in log
    assert f"public URL {NGROK_URL}" in log  # what the app itself says it uses


def test_default_probes_stay_on_loopback() -> None:
    default = TunnelProbe()
    for url in (default.ngrok_api_url, *default.cloudflared_metrics_urls):
        assert urlsplit(url).hostname == "127.0.0.1"
    assert [urlsplit(u).port for u in default.cloudflared_metrics_urls] == list(range(20241, 20246))
    assert urlsplit(default.ngrok_api_url).port == 4040
