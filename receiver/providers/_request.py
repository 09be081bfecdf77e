"""Pure pieces of the calls the receiver makes to providers: what to send, and what an answer means."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from receiver.errors import InvalidPayload, ReceiverError
from receiver.providers._parse import error_text, load_object


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """One HTTP call to a provider; `path` is joined to the provider's base URL."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any = None


@dataclass(frozen=True, slots=True)
class GenerationSpec:
    """What the caller of `POST /v1/generations` asked for, provider-neutral."""

    prompt: str
    model: str | None = None
    input_image: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Submitted:
    """One job a provider accepted: its id, and how many outputs complete it (None: one answer says all)."""

    provider_job_id: str
    expected_outputs: int | None = None


class BadGeneration(ReceiverError):
    """A request this provider cannot take; `field` names the part of the request at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`extra` over `base`; nested objects are merged key by key rather than replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def refusal_message(status: int, body: bytes) -> str:
    """The provider's `message`, else its `error`, else a short excerpt of what it answered; a lone
    surrogate escape (`"\\ud800"`), which no UTF-8 text can hold, becomes `?`."""
    text = _refusal_text(status, body)
    return text.encode("utf-8", "replace").decode("utf-8")


def _refusal_text(status: int, body: bytes) -> str:
    try:
        obj: Any = load_object(body)
    except InvalidPayload:
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            obj = None
    if isinstance(obj, dict):
        for key in ("message", "error", "errors", "detail"):
            text = error_text(obj.get(key))
            if text:
                return text
    if isinstance(obj, (list, str)):
        text = error_text(obj)
        if text:
            return text
    excerpt = body[:200].decode("utf-8", "replace").strip()
    return excerpt or f"HTTP {status} with an empty body"
