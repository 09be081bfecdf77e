"""Finding a local tunnel to the receiver, for `serve` and `info` when RECEIVER_PUBLIC_URL is unset.

Two kinds are looked for, at once and briefly (start must never be slow): an ngrok agent's API
(`GET {ngrok}/api/tunnels`: the https tunnel whose `config.addr` is the receiver's port on this
machine) and a cloudflared quick tunnel's metrics server (`GET {metrics}/quicktunnel` →
`{"hostname": …}`). cloudflared does not say where its tunnel leads, so its URL is taken as it is.
Parsing is pure; `discover` does the few requests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from receiver.util.aio import read_capped

NGROK_API_URL = "http://127.0.0.1:4040"
CLOUDFLARED_METRICS_URLS: tuple[str, ...] = tuple(f"http://127.0.0.1:{port}" for port in range(20241, 20246))
MAX_ANSWER_BYTES = 262144
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_LOCAL_NAMES = {"", "localhost"}


@dataclass(frozen=True, slots=True)
class TunnelProbe:
    """Where to look and for how long (tests point these at fake servers)."""

    ngrok_api_url: str = NGROK_API_URL
    cloudflared_metrics_urls: tuple[str, ...] = CLOUDFLARED_METRICS_URLS
    timeout_s: float = 0.3  # for all the requests together: they run at the same time


@dataclass(frozen=True, slots=True)
class Tunnel:
    public_url: str
    kind: str  # ngrok | cloudflared
    port_checked: bool  # whether the tunnel is known to lead to the receiver's port

    def describe(self, port: int) -> str:
        if self.port_checked:
            return f"{self.public_url} (an {self.kind} tunnel to port {port})"
        return (
            f"{self.public_url} (a {self.kind} quick tunnel; cloudflared does not say where it leads: "
            f"make sure it forwards to port {port}, or set RECEIVER_PUBLIC_URL)"
        )


# -- pure parts -------------------------------------------------------------------------------


def addr_port(addr: Any) -> int | None:
    """The port of an ngrok `config.addr` that points at this machine: `8000`, `localhost:8000`,
    `http://127.0.0.1:8000`, `https://localhost` (443) …; None for another host or anything else."""
    if isinstance(addr, int) and not isinstance(addr, bool):
        return addr if 0 < addr < 65536 else None
    if not isinstance(addr, str) or not addr.strip():
        return None
    addr = addr.strip()
    if addr.isdigit():
        number = int(addr)
        return number if 0 < number < 65536 else None
    try:
        parts = urlsplit(addr if "://" in addr else f"http://{addr}")
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    return port if port is not None and is_local(parts.hostname or "") else None


def is_local(host: str) -> bool:
    host = host.lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def https_url(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith("https://"):
        return None
    try:
        host = urlsplit(value).hostname
    except ValueError:
        return None
    return value.rstrip("/") if host and _HOSTNAME.fullmatch(host) else None


def ngrok_tunnel(body: bytes, port: int) -> str | None:
    """The public https URL of the tunnel to `port` in an ngrok agent's `/api/tunnels` answer."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    tunnels = answer.get("tunnels") if isinstance(answer, dict) else None
    for tunnel in tunnels if isinstance(tunnels, list) else []:
        if not isinstance(tunnel, dict):
            continue
        config = tunnel.get("config")
        url = https_url(tunnel.get("public_url"))
        if url and isinstance(config, dict) and addr_port(config.get("addr")) == port:
            return url
    return None


def cloudflared_tunnel(body: bytes) -> str | None:
    """The https URL of a cloudflared quick tunnel from its metrics server's `/quicktunnel` answer."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    hostname = answer.get("hostname") if isinstance(answer, dict) else None
    if not isinstance(hostname, str) or not _HOSTNAME.fullmatch(hostname):
        return None
    return f"https://{hostname.lower()}"


# -- probing ----------------------------------------------------------------------------------


async def _get(client: httpx.AsyncClient, url: str) -> bytes | None:
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                return None
            return await read_capped(response.aiter_bytes(), MAX_ANSWER_BYTES)
    except httpx.HTTPError:
        return None


async def _ngrok(client: httpx.AsyncClient, base: str, port: int) -> Tunnel | None:
    body = await _get(client, f"{base.rstrip('/')}/api/tunnels")
    url = ngrok_tunnel(body, port) if body is not None else None
    return Tunnel(url, "ngrok", port_checked=True) if url else None


async def _cloudflared(client: httpx.AsyncClient, base: str) -> Tunnel | None:
    body = await _get(client, f"{base.rstrip('/')}/quicktunnel")
    url = cloudflared_tunnel(body) if body is not None else None
    return Tunnel(url, "cloudflared", port_checked=False) if url else None


def pick(found: Sequence[Tunnel | None]) -> Tunnel | None:
    """An ngrok tunnel (known to lead to our port) before a cloudflared one, else the first found."""
    tunnels = [t for t in found if t is not None]
    return next((t for t in tunnels if t.port_checked), tunnels[0] if tunnels else None)


async def discover(port: int, probe: TunnelProbe = TunnelProbe()) -> Tunnel | None:
    """The tunnel to `port`, if one of the probes answers within `probe.timeout_s`; else None."""
    async with httpx.AsyncClient(timeout=probe.timeout_s, trust_env=False, follow_redirects=False) as client:
        tasks = [asyncio.ensure_future(_ngrok(client, probe.ngrok_api_url, port))]
        tasks += [asyncio.ensure_future(_cloudflared(client, url)) for url in probe.cloudflared_metrics_urls]
        done, pending = await asyncio.wait(tasks, timeout=probe.timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return pick([task.result() for task in tasks if task in done and not task.cancelled() and task.exception() is None])
