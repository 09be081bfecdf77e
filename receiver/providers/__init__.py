"""The provider registry: one record per provider, and every other module asks it.

Each adapter module (`pixazo.py`, `runware.py`, …) is pure: (headers, raw body) in, normalized
`Completion`s out, and the requests we send (`build_submit`/`parse_submit`, `build_poll`/`parse_poll`).
No I/O here. Adding a provider means one new adapter module, its record below, and its settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Mapping

from receiver.models import PROVIDERS, Completion
from receiver.providers import apiframe, lumenfall, oxen, pixazo, runware

WebhookParser = Callable[[Mapping[str, str], bytes], list[Completion]]


@dataclass(frozen=True, slots=True)
class Provider:
    """What the rest of the receiver needs to know of one provider."""

    name: str
    adapter: ModuleType
    # The setting whose value verifies its webhooks' signatures (checked only when it is set), if any.
    webhook_secret: str | None = None
    # Results arrive later (webhook, stream, poll); False: the submit's own answer holds them (Lumenfall).
    delivers_later: bool = True
    # Has a status endpoint the reconciler (and Oxen's catch-up) can poll.
    polls: bool = True
    # The caller's Idempotency-Key is sent as the provider's own request id (the provider dedups too).
    forwards_idempotency_key: bool = False

    @property
    def webhooks(self) -> bool:
        return hasattr(self.adapter, "parse_webhook")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[Completion]:
        return self.adapter.parse_webhook(headers, body)  # type: ignore[no-any-return]

    def verify_webhook(self, secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
        return bool(self.adapter.verify_webhook(secret, body, headers))


REGISTRY: dict[str, Provider] = {p.name: p for p in (  # in the order people see them listed
    Provider("pixazo", pixazo),
    Provider("runware", runware),
    Provider("apiframe", apiframe, webhook_secret="apiframe_api_key", forwards_idempotency_key=True),
    Provider("lumenfall", lumenfall, webhook_secret="lumenfall_webhook_secret", delivers_later=False, polls=False),
    Provider("oxen", oxen),
)}
assert set(REGISTRY) == set(PROVIDERS), "the registry and models.ProviderName must name the same providers"

WEBHOOK_PROVIDERS: tuple[str, ...] = tuple(p.name for p in REGISTRY.values() if p.webhooks)

__all__ = ["REGISTRY", "WEBHOOK_PROVIDERS", "Provider", "WebhookParser"]
