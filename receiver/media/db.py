"""Mirrored objects kept in the store's own database (`RECEIVER_MEDIA_URL=db`): SQLite blobs or
PostgreSQL bytea, in chunks of CHUNK bytes (`media_chunks`), so every replica and every deploy has them.

An upload is written chunk by chunk under a random id while hashed, then named `objects/<sha256>` (one
small row, the chunks are not written again): nothing half-written is served, the same bytes are kept
once, and uploads a crash cut short (never named) are deleted by the sweep.
A read fetches only the chunks a range covers, one at a time: memory stays at a chunk whatever the size.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator

from receiver.errors import StoreError
from receiver.media.objects import ObjectMissing, Stored, nothing
from receiver.store import Store

CHUNK = 512 * 1024


class DbObjects:
    redirects = False  # served by /media/ itself

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def key(sha256: str) -> str:
        return f"objects/{sha256}"

    async def put(self, chunks: AsyncIterator[bytes], *, content_type: str) -> Stored:
        """Store `chunks` (the content type lives in the media table); the object's digest and size."""
        digest = hashlib.sha256()
        size, seq = 0, 0
        pending = bytearray()
        upload = uuid.uuid4().hex
        try:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                pending += chunk
                while len(pending) >= CHUNK:
                    await self.store.put_media_chunk(upload, seq, bytes(pending[:CHUNK]))
                    del pending[:CHUNK]
                    seq += 1
            if pending or seq == 0:  # an empty object is one empty chunk, so that it exists
                await self.store.put_media_chunk(upload, seq, bytes(pending))
            sha256 = digest.hexdigest()
            await self.store.name_media_upload(upload, self.key(sha256))
        except BaseException:
            with contextlib.suppress(StoreError):
                await self.store.drop_media_upload(upload)
            raise
        return Stored(sha256, size)

    async def exists(self, sha256: str) -> bool:
        return await self.store.has_media_object(self.key(sha256))

    async def read(self, sha256: str, *, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of an object, streamed; raises ObjectMissing at once when it is gone."""
        if end <= start:
            return nothing()
        first = await self.store.media_chunk(self.key(sha256), start // CHUNK)
        if first is None:
            raise ObjectMissing(sha256)
        return self._chunks(sha256, first, start, end)

    async def _chunks(self, sha256: str, first: bytes, start: int, end: int) -> AsyncIterator[bytes]:
        seq, data = start // CHUNK, first
        while True:
            base = seq * CHUNK
            piece = data[max(0, start - base) : end - base]
            if piece:
                yield piece
            seq += 1
            if seq * CHUNK >= end:
                return
            found = await self.store.media_chunk(self.key(sha256), seq)
            if found is None:  # deleted while being read: the response ends short of its length
                raise ObjectMissing(sha256)
            data = found

    async def presigned(self, sha256: str) -> str:
        raise NotImplementedError("objects in the database are served by /media/ itself")

    async def forget_incoming(self, *, older_than: float) -> int:
        return await self.store.forget_media_uploads(older_than=older_than)

    async def delete(self, sha256: str) -> None:
        await self.store.delete_media_object(self.key(sha256))
