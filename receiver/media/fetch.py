"""Fetching one result for the mirror: http(s) with every destination checked, bounded in size and time.

Names are resolved by `GuardedResolver` inside the HTTP client, which drops refused addresses before
connecting: the connection goes to an address that was checked (no DNS rebinding between check and
connect), on every redirect too (followed here, at most MAX_REDIRECTS). IP literals skip resolvers,
so they are checked before each request. The Host header and TLS SNI stay the URL's name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from receiver.errors import ReceiverError
from receiver.media.guard import MirrorFailure, address_allowed, check_content_type, refused

MAX_REDIRECTS = 5
CHUNK = 64 * 1024


class RefusedAddress(ReceiverError, OSError):
    """A name that resolves only to refused addresses (an OSError too: what aiohttp's resolver may raise)."""


class GuardedResolver(ThreadedResolver):
    def __init__(self, *, allow_private: bool) -> None:
        super().__init__()
        self.allow_private = allow_private

    async def resolve(
        self,
        host: str,
        port: int = 0,
        family: socket.AddressFamily = socket.AF_INET,
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        allowed = [r for r in results if address_allowed(r["host"], allow_private=self.allow_private)]
        if not allowed:
            raise RefusedAddress(f"refused destination: {host[:100]} is a loopback, private or link-local address")
        return allowed


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_bytes: int
    allow_private: bool
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 15.0  # silence between two reads; the whole attempt has its own deadline


@dataclass
class Body:
    content_type: str
    declared: int | None  # Content-Length, when the origin sent one (and no Content-Encoding)
    response: aiohttp.ClientResponse
    max_bytes: int

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, at most `max_bytes` of it: past that, or short of its Content-Length, it fails."""
        size = 0
        try:
            async for chunk in self.response.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > self.max_bytes:
                    raise refused(f"larger than {self.max_bytes} bytes (RECEIVER_MEDIA_MAX_BYTES)")
                yield chunk
        except aiohttp.ClientPayloadError:
            raise MirrorFailure(
                f"the body ended after {size} bytes, short of its Content-Length ({self.declared})", transient=True
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise MirrorFailure(f"the connection failed while reading ({type(exc).__name__})", transient=True) from None
        if self.declared is not None and size != self.declared:
            raise MirrorFailure(f"the body was {size} bytes, not its Content-Length ({self.declared})", transient=True)


def _check_literal(url: URL, allow_private: bool) -> None:
    host = (url.host or "").strip("[]")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    if not address_allowed(host, allow_private=allow_private):
        raise refused(f"refused destination: {host[:100]} is a loopback, private or link-local address")


def _refused_cause(exc: BaseException) -> RefusedAddress | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RefusedAddress):
            return seen
        seen = seen.__cause__ or getattr(seen, "os_error", None)
        if seen is exc:
            break
    return None


class Fetcher:
    """One HTTP client for every mirror fetch of this process; `open()` inside the event loop."""

    def __init__(self, limits: FetchLimits) -> None:
        self.limits = limits
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> Fetcher:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(allow_private=self.limits.allow_private), use_dns_cache=False, limit=32
        )
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.limits.connect_timeout_s, sock_read=self.limits.read_timeout_s
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            trust_env=False,
            headers={"Accept-Encoding": "identity", "User-Agent": "receiver-mirror"},
        )
        return self

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.asynccontextmanager
    async def get(self, url: str, *, hint: str | None) -> AsyncIterator[Body]:
        """The response body of `url` once its status and type are acceptable (redirects followed)."""
        if self._session is None:
            raise RuntimeError("Fetcher is not open")
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                target = URL(current, encoded=False)
            except (ValueError, TypeError):
                raise refused("not a valid URL") from None
            if target.scheme not in ("http", "https") or not target.host:
                raise refused(f"refused destination: only http(s) URLs are fetched, not {target.scheme[:20]!r}")
            _check_literal(target, self.limits.allow_private)
            try:
                response = await self._session.get(target, allow_redirects=False)
            except (aiohttp.InvalidURL, ValueError):
                raise refused("not a valid URL") from None
            except TimeoutError:
                raise MirrorFailure("the origin did not answer in time", transient=True) from None
            except (aiohttp.ClientError, OSError) as exc:
                cause = _refused_cause(exc)
                if cause is not None:
                    raise refused(str(cause)) from None
                raise MirrorFailure(f"could not connect to the origin ({type(exc).__name__})", transient=True) from None
            try:
                status = response.status
                if status in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location")
                    if not location:
                        raise refused(f"the origin answered {status} without a Location")
                    current = urljoin(str(target), location)
                    continue
                if status == 429 or status == 408 or status >= 500:
                    raise MirrorFailure(f"the origin answered {status}", transient=True)
                if status != 200:
                    raise refused(f"the origin answered {status}")
                content_type = check_content_type(response.headers.get("Content-Type"), hint)
                declared = response.content_length if "Content-Encoding" not in response.headers else None
                if declared is not None and declared > self.limits.max_bytes:
                    raise refused(
                        f"larger than {self.limits.max_bytes} bytes (RECEIVER_MEDIA_MAX_BYTES): "
                        f"Content-Length {declared}"
                    )
                yield Body(content_type, declared, response, self.limits.max_bytes)
                return
            finally:
                response.close()  # not release(): a body read only in part must not go back to the pool
        raise refused(f"more than {MAX_REDIRECTS} redirects")
