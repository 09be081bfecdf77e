"""Small pure helpers shared by the provider adapters."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from receiver.errors import InvalidPayload
from receiver.models import JobStatus

_EXTRA_TYPES = {".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


# orjson reads an integer past 64 bits (from 19 digits, negative) as a float; the standard library keeps it exact.
# Such a run of digits is found with every digit made a "0" first (a table lookup per byte) and a plain substring
# search, where a regex search for [0-9]{19} costs ten times as much on a webhook's body.
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGITS = b"0" * 19


def has_long_digits(body: bytes) -> bool:
    """Whether `body` holds 19 ASCII digits in a row."""
    return _LONG_DIGITS in body.translate(_DIGITS_AS_ZERO)


def load_object(body: bytes) -> dict[str, Any]:
    """Decode a JSON object, or say precisely why the body is not one.

    orjson first (a webhook's JSON in a fifth of the time); a body it refuses, or one with a number
    it would read differently, goes the standard library's way, which accepts what JSON allows
    beyond orjson (lone surrogate escapes, NaN, huge numbers) and words the errors."""
    if not body.strip():
        raise InvalidPayload("empty body")
    if not has_long_digits(body):
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            if not isinstance(value, dict):
                raise InvalidPayload(f"expected a JSON object, got {type(value).__name__}")
            return value
    return _load_exactly(body)


def _load_exactly(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidPayload("body is not usable JSON: nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise InvalidPayload(f"body is not usable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidPayload(f"expected a JSON object, got {type(value).__name__}")
    return value


def require_id(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(f"'{field}' must be a non-empty string")
    return value.strip()


def status_of(obj: dict[str, Any], words: Mapping[str, JobStatus], *, fold: Callable[[str], str]) -> JobStatus:
    """`obj["status"]`, one of the provider's `words` once `fold`ed to their case (str.upper or str.lower)."""
    raw = obj.get("status")
    if not isinstance(raw, str) or fold(raw) not in words:
        raise InvalidPayload(f"'status' must be one of {sorted(words)}, got {raw!r}")
    return words[fold(raw)]


def object_list(obj: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """`obj[field]`: a non-empty list of objects."""
    items = obj.get(field)
    if not isinstance(items, list) or not items:
        raise InvalidPayload(f"'{field}' must be a non-empty list")
    if not all(isinstance(item, dict) for item in items):
        raise InvalidPayload(f"'{field}' items must be objects")
    return items


def url_list(value: Any, field: str) -> list[str]:
    """A URL or a list of URLs, as providers are loose about which they send."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    urls: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise InvalidPayload(f"'{field}' must be a URL or a list of URLs")
        urls.append(item.strip())
    return urls


def error_text(value: Any) -> str | None:
    """Providers send errors as a string, an object with a message, or a list of those."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("message", "error", "detail", "type", "code"):
            inner = value.get(key)
            if isinstance(inner, str) and inner:
                return inner
            if isinstance(inner, dict):
                return error_text(inner)
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list):
        parts = [t for t in (error_text(v) for v in value) if t]
        return "; ".join(parts) or None
    return str(value)


def guess_media_type(url: str, fallback: str | None = None) -> str | None:
    try:
        path = urlsplit(url).path.lower()
    except ValueError:  # "http://[": nothing to read a type from
        return fallback
    for ext, mime in _EXTRA_TYPES.items():
        if path.endswith(ext):
            return mime
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed or fallback
