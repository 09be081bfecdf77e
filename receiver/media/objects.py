"""The media store: mirrored objects on local disk or S3, through obstore (Rust `object_store`).

Objects are content-addressed: `objects/<sha256>`. An upload streams to `incoming/<random>` while
its digest is computed, then is renamed to its address (S3: a server-side copy), so a half-written
object is never served and two uploads of the same bytes end as one object.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import obstore
from obstore.exceptions import BaseError, NotFoundError

__all__ = ["STORE_ERRORS", "MediaObjects", "NotFoundError", "ObjectMissing", "Stored"]

from obstore.store import LocalStore, S3Store

from receiver.media.target import MediaTarget

# What a media store operation raises when the store fails: obstore's own errors, and I/O errors.
STORE_ERRORS = (BaseError, OSError)
# What obstore raises for a missing object: its own error, or (local disk) the built-in one.
MISSING = (NotFoundError, FileNotFoundError)


class ObjectMissing(Exception):
    """The object is not in the media store (another replica's disk, a redeploy, removed by hand)."""


PRESIGN_S = 300  # how long a presigned S3 URL that /media/ redirects to stays valid


@dataclass(frozen=True, slots=True)
class Stored:
    sha256: str
    size: int


class MediaObjects:
    def __init__(self, target: MediaTarget) -> None:
        self.target = target
        self._store: Any
        if target.kind == "local":
            os.makedirs(target.path, exist_ok=True)
            self._store = LocalStore(target.path, mkdir=True)
            self._chunk = 1024 * 1024  # no minimum part size on disk: keep what is held in memory small
        elif target.kind == "s3":
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
            client: Any = {"allow_http": True} if endpoint.startswith("http://") else None  # a ClientConfig
            self._store = S3Store(target.bucket, prefix=target.prefix or None, client_options=client)
            self._chunk = 5 * 1024 * 1024  # S3's minimum part size
        else:
            raise ValueError("media mirroring is off")

    @property
    def redirects(self) -> bool:
        """Whether /media/ answers GET with a redirect to a presigned URL (S3) rather than the bytes."""
        return self.target.kind == "s3"

    @staticmethod
    def key(sha256: str) -> str:
        return f"objects/{sha256}"

    async def put(self, chunks: AsyncIterator[bytes], *, content_type: str) -> Stored:
        """Stream `chunks` into the store; returns the object's digest and size."""
        digest = hashlib.sha256()
        size = 0

        async def hashed() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        incoming = f"incoming/{uuid.uuid4().hex}"
        try:
            # The content type is kept in the store's media table; S3 also gets it, for presigned GETs.
            attributes = {"Content-Type": content_type} if self.target.kind == "s3" else None
            await obstore.put_async(
                self._store,
                incoming,
                hashed(),
                attributes=attributes,
                use_multipart=True,
                chunk_size=self._chunk,
                max_concurrency=2,
            )
            sha256 = digest.hexdigest()
            await obstore.rename_async(self._store, incoming, self.key(sha256), overwrite=True)
        except BaseException:
            await self._forget(incoming)
            raise
        return Stored(sha256, size)

    async def _forget(self, path: str) -> None:
        try:
            await obstore.delete_async(self._store, path)
        except STORE_ERRORS:  # nothing was written, or the store is away: the next sweep is not needed for it
            pass

    async def read(self, sha256: str, *, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of an object, streamed; raises ObjectMissing at once when it is gone."""
        if end <= start:
            return nothing()
        try:
            result = await obstore.get_async(self._store, self.key(sha256), options={"range": (start, end)})
        except MISSING:
            raise ObjectMissing(sha256) from None
        return _stream(result)

    async def exists(self, sha256: str) -> bool:
        try:
            await obstore.head_async(self._store, self.key(sha256))
        except MISSING:
            return False
        return True

    async def presigned(self, sha256: str) -> str:
        return await obstore.sign_async(self._store, "GET", self.key(sha256), timedelta(seconds=PRESIGN_S))

    async def forget_incoming(self, *, older_than: float) -> int:
        """Delete uploads left half-way (a process killed mid-copy) last written before `older_than` (epoch s)."""
        stale: list[str] = []
        async for batch in obstore.list(self._store, "incoming/", chunk_size=200):
            stale.extend(meta["path"] for meta in batch if meta["last_modified"].timestamp() < older_than)
            if len(stale) >= 1000:
                break
        for path in stale:
            await self._forget(path)
        return len(stale)

    async def delete(self, sha256: str) -> None:
        try:
            await obstore.delete_async(self._store, self.key(sha256))
        except MISSING:
            pass


async def _stream(result: Any) -> AsyncIterator[bytes]:
    async for chunk in result.stream(min_chunk_size=64 * 1024):
        yield bytes(chunk)


async def nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing
