"""Media URLs and requests, pure: signed capability paths and HTTP byte ranges."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from receiver.errors import ReceiverError

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def signature(key: bytes, sha256: str) -> str:
    """HMAC-SHA256 of the object key, base64url without padding (43 characters)."""
    mac = hmac.new(key, f"media:{sha256}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def media_path(key: bytes, sha256: str) -> str:
    return f"/media/{signature(key, sha256)}/{sha256}"


def verified_sha256(key: bytes, rest: str) -> str | None:
    """The object a `/media/{rest}` path names, when its signature is right; None for anything else."""
    sig, _, sha256 = rest.partition("/")
    if not _SIGNATURE.fullmatch(sig) or not _SHA256.fullmatch(sha256):
        return None
    return sha256 if hmac.compare_digest(sig, signature(key, sha256)) else None


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive


class Unsatisfiable(ReceiverError):
    """A syntactically valid range that no byte of the object satisfies (416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One `bytes=` range of an object of `size` bytes; None means the whole object (no header, an
    unparsable one, or several ranges, which may be answered whole). Raises Unsatisfiable."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable()
        return ByteRange(max(0, size - suffix), size)
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable()
    return ByteRange(start, end)
