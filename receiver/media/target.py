"""`RECEIVER_MEDIA_URL`, parsed: where mirrored results go (pure; see receiver.media.objects)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class MediaTarget:
    kind: Literal["off", "local", "s3", "db"]
    path: str = ""  # local: the directory (absolute)
    bucket: str = ""
    prefix: str = ""

    @property
    def enabled(self) -> bool:
        return self.kind != "off"

    def describe(self) -> str:
        if self.kind == "local":
            return f"directory {self.path}"
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if self.kind == "db":
            return "the store's database"
        return "off"


LOCAL_DEFAULT = "./receiver-media"


def default_media_url(database_url: str) -> str:
    """RECEIVER_MEDIA_URL when unset: the database with PostgreSQL (replicas, and a PaaS's redeploys,
    share no disk), a directory beside the SQLite file otherwise."""
    return "db" if database_url.lower().startswith(("postgres://", "postgresql://")) else LOCAL_DEFAULT


def parse_media_url(value: str) -> MediaTarget:
    """`off`, `db`, a directory (relative or absolute), `file:///absolute/dir` or `s3://bucket/prefix`."""
    text = value.strip()
    if not text:
        raise ValueError("RECEIVER_MEDIA_URL is empty: use db, a directory, file:///dir, s3://bucket/prefix or off")
    if text.lower() in ("off", "none", "false", "disabled"):
        return MediaTarget("off")
    if text.lower() == "db":
        return MediaTarget("db")
    if "://" not in text:
        return MediaTarget("local", path=os.path.abspath(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError("RECEIVER_MEDIA_URL: a file URL needs an absolute path, e.g. file:///var/media")
        return MediaTarget("local", path=os.path.abspath(unquote(parts.path)))
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError("RECEIVER_MEDIA_URL: an s3 URL needs a bucket, e.g. s3://bucket/prefix")
        return MediaTarget("s3", bucket=parts.netloc, prefix=parts.path.strip("/"))
    raise ValueError(f"RECEIVER_MEDIA_URL: unsupported scheme {scheme!r} (db, a directory, file://, s3:// or off)")
