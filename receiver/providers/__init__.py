"""The provider registry: one record per provider, and every other module asks it.

Each adapter module (`pixazo.py`, `runware.py`, …) is pure: (headers, raw body) in, normalized
`Completion`s out, and the requests we send (`build_submit`/`parse_submit`, `build_poll`/`parse_poll`).
No I/O here. Adding a provider means one new adapter module, its record below, and its settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Mapping

from receiver.models import PROVIDERS, Completion
from receiver.providers import apiframe, lumenfall, oxen, pixazo, runware
from receiver.providers._request import GenerationSpec, ProviderRequest, Submitted


@dataclass(frozen=True, slots=True)
class Provider:
    """What the rest of the receiver needs to know of one provider, and typed access to its adapter."""

    name: str
    adapter: ModuleType
    # The setting whose value verifies its webhooks' signatures (checked only when it is set), if any.
    webhook_secret: str | None = None
    # The submit's own answer holds the result (Lumenfall's images), so the receiver runs the call in the
    # background (receiver.lumenfall_calls); the others acknowledge and deliver later (webhook, stream, poll).
    answers_synchronously: bool = False
    # The caller's Idempotency-Key is sent as the provider's own request id (the provider dedups too).
    forwards_idempotency_key: bool = False

    @property
    def webhooks(self) -> bool:
        return hasattr(self.adapter, "parse_webhook")

    @property
    def polls(self) -> bool:
        """Has a status endpoint the reconciler (and Oxen's catch-up) can poll."""
        return hasattr(self.adapter, "build_poll")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[Completion]:
        return self.adapter.parse_webhook(headers, body)  # type: ignore[no-any-return]

    def verify_webhook(self, secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
        return bool(self.adapter.verify_webhook(secret, body, headers))

    def build_submit(self, spec: GenerationSpec, *, api_key: str, webhook_url: str,
                     request_id: str) -> ProviderRequest:
        return self.adapter.build_submit(  # type: ignore[no-any-return]
            spec, api_key=api_key, webhook_url=webhook_url, request_id=request_id)

    def parse_submit(self, request: ProviderRequest, body: bytes) -> list[Submitted]:
        return self.adapter.parse_submit(request, body)  # type: ignore[no-any-return]

    def submitted_before(self, request: ProviderRequest) -> list[Submitted]:
        """The jobs known before the provider answers (their ids are ours: Runware's taskUUID), if any."""
        early = getattr(self.adapter, "submitted_before", None)
        return early(request) if early is not None else []

    def build_poll(self, provider_job_id: str, *, api_key: str) -> ProviderRequest:
        return self.adapter.build_poll(provider_job_id, api_key=api_key)  # type: ignore[no-any-return]

    def parse_poll(self, body: bytes) -> list[Completion]:
        return self.adapter.parse_poll(body)  # type: ignore[no-any-return]


REGISTRY: dict[str, Provider] = {p.name: p for p in (  # in the order people see them listed
    Provider("pixazo", pixazo),
    Provider("runware", runware),
    Provider("apiframe", apiframe, webhook_secret="apiframe_api_key", forwards_idempotency_key=True),
    Provider("lumenfall", lumenfall, webhook_secret="lumenfall_webhook_secret", answers_synchronously=True),
    Provider("oxen", oxen),
)}
assert set(REGISTRY) == set(PROVIDERS), "the registry and models.ProviderName must name the same providers"
assert not any(p.polls and p.answers_synchronously for p in REGISTRY.values()), "a synchronous call has nothing to poll"

WEBHOOK_PROVIDERS: tuple[str, ...] = tuple(p.name for p in REGISTRY.values() if p.webhooks)
POLLING_PROVIDERS: tuple[str, ...] = tuple(p.name for p in REGISTRY.values() if p.polls)

__all__ = ["POLLING_PROVIDERS", "REGISTRY", "WEBHOOK_PROVIDERS", "Provider"]
