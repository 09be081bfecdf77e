"""What the provider tests share: raw bodies, and requests built with known arguments."""

from __future__ import annotations

import json
from types import ModuleType

from receiver.providers._request import GenerationSpec, ProviderRequest

HOOK = "https://rx.example/webhooks/x?token=t0k"
IMAGE = "https://img.example/in.png"


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def build(module: ModuleType, spec: GenerationSpec, request_id: str = "rid-1") -> ProviderRequest:
    """`module`'s submit request for `spec`, with API key "K" and the webhook URL HOOK."""
    return module.build_submit(spec, api_key="K", webhook_url=HOOK, request_id=request_id)  # type: ignore[no-any-return]
