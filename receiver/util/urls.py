"""URL checks shared by the settings and the API."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx


def check_callback_url(value: str | None) -> str | None:
    """http/https with a host, or nothing; kept exactly as given. Whatever passes, httpx can send to."""
    if value is None:
        return None
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number in 0-65535
        httpx.URL(value)
    except (ValueError, httpx.InvalidURL):
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value
