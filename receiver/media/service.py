"""The media mirror as the app holds it: where objects go, and how their URLs are signed."""

from __future__ import annotations

import logging
import secrets as random_secrets
from dataclasses import dataclass

from receiver.media.db import DbObjects
from receiver.media.objects import MediaObjects
from receiver.media.sign import media_path
from receiver.media.target import MediaTarget, default_media_url, parse_media_url
from receiver.settings import Settings
from receiver.store import Store

log = logging.getLogger("receiver.media.service")


@dataclass(frozen=True)
class Media:
    target: MediaTarget
    objects: MediaObjects | DbObjects
    key: bytes  # signs /media/ URLs; generated once and kept in the store, so every replica shares it
    public_url: str

    def stored_url(self, sha256: str) -> str:
        return f"{self.public_url}{media_path(self.key, sha256)}"

    def __repr__(self) -> str:  # never print the key by accident
        return f"Media({self.target.describe()})"


def media_target(settings: Settings) -> MediaTarget:
    return parse_media_url(settings.media_url or default_media_url(settings.database_url))


async def open_media(settings: Settings, store: Store, *, shared_store: bool) -> Media | None:
    """The media store named by RECEIVER_MEDIA_URL (None when `off`). `shared_store`: the job store is
    shared by replicas (PostgreSQL), so a local directory there warrants a warning."""
    target = media_target(settings)
    if not target.enabled:
        return None
    key = await store.secret("media_signing_key", lambda: random_secrets.token_urlsafe(32))
    if target.kind == "local" and shared_store:
        log.warning(
            "RECEIVER_MEDIA_URL is the local directory %s while the store is PostgreSQL: other replicas "
            "cannot serve these files, and the next deploy will not have them unless every replica "
            "mounts it; use db (the default with PostgreSQL) or s3://…",
            target.path,
        )
    objects = DbObjects(store) if target.kind == "db" else MediaObjects(target)
    return Media(target, objects, key.encode(), settings.base_public_url)
