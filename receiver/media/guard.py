"""Which destinations the mirror may fetch from: pure address checks and data: URI parsing."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from receiver.errors import ReceiverError

# Provider bytes are hostile input served from the receiver's own origin: only types a browser renders
# without running anything are mirrored. SVG (and any other non-raster image/*) can carry script, so it
# is refused rather than stored.
RASTER_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"})
OCTET_STREAM = "application/octet-stream"


def mirrorable(kind: str) -> bool:
    """A raster image or a video: the types the mirror stores under their own name."""
    return kind in RASTER_IMAGES or (kind.startswith("video/") and len(kind) > 6)


class MirrorFailure(ReceiverError):
    """Why an output could not be mirrored; `transient` ones are retried (for a while)."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def refused(reason: str) -> MirrorFailure:
    return MirrorFailure(reason, transient=False)


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """Public unicast addresses only, unless private ones are allowed (loopback, RFC 1918, link-local…)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if allow_private:
        return not ip.is_unspecified and not ip.is_multicast
    return ip.is_global and not ip.is_multicast


def media_type_of(header: str | None) -> str | None:
    """The bare lower-case MIME type of a Content-Type header, None when absent."""
    if header is None:
        return None
    return header.split(";", 1)[0].strip().lower() or None


def check_content_type(header: str | None, hint: str | None) -> str:
    """The type to store the object under; raises for a type that is not a raster image, a video or
    octet-stream. Octet-stream (or none) takes the provider's own media type when that is mirrorable."""
    kind = media_type_of(header)
    if kind is not None and mirrorable(kind):
        return kind
    if kind is None or kind == OCTET_STREAM:
        guess = media_type_of(hint)
        return guess if guess and mirrorable(guess) else OCTET_STREAM
    if kind.startswith("image/"):
        raise refused(
            f"the origin sent Content-Type {kind[:80]!r}: only raster images (png, jpeg, gif, webp, "
            "avif) and videos are mirrored, since other image types such as SVG can carry script"
        )
    raise refused(f"the origin sent Content-Type {kind[:80]!r}, not an image, a video or application/octet-stream")


@dataclass(frozen=True, slots=True)
class DataUri:
    media_type: str | None
    data: bytes


def parse_data_uri(uri: str, *, max_bytes: int) -> DataUri:
    """`data:[<type>][;base64],<data>` decoded; raises (permanently) when malformed or too large."""
    head, sep, payload = uri[5:].partition(",")
    if not sep:
        raise refused("a data: URI without a comma")
    params = head.split(";")
    is_base64 = params[-1].strip().lower() == "base64"
    media_type = params[0].strip().lower() or None
    # A quick bound before decoding: base64 is 4 chars per 3 bytes; percent-encoding is at least 1 char a byte.
    if (len(payload) * 3 // 4 if is_base64 else len(payload) // 3) > max_bytes:
        raise refused(f"larger than {max_bytes} bytes (RECEIVER_MEDIA_MAX_BYTES)")
    try:
        data = base64.b64decode(unquote_to_bytes(payload), validate=False) if is_base64 else unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise refused("a data: URI whose base64 does not decode") from None
    if len(data) > max_bytes:
        raise refused(f"larger than {max_bytes} bytes (RECEIVER_MEDIA_MAX_BYTES)")
    return DataUri(media_type, data)
