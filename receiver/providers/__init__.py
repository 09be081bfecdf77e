"""The provider registry: one record per provider, and every other module asks it.

Each adapter module (`pixazo.py`, `runware.py`, …) is pure: (headers, raw body) in, normalized
`Completion`s out, and the requests we send (`build_submit`/`parse_submit`, `build_poll`/`parse_poll`).
No I/O here. Adding a provider means one new adapter module, its record below, and its settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from receiver.models import PROVIDERS, Completion
from receiver.providers import apiframe, lumenfall, oxen, pixazo, runware
from receiver.providers._request import GenerationSpec, ProviderRequest, Submitted


class Submits(Protocol):
    """What every adapter module has: the submit call and what its answer means."""

    BASE_URL: str

    def build_submit(
        self, spec: GenerationSpec, *, api_key: str, webhook_url: str, request_id: str
    ) -> ProviderRequest: ...


class ParsesSubmit(Protocol):
    """An adapter whose submit is acknowledged and delivered later (webhook, stream or poll)."""

    def parse_submit(self, request: ProviderRequest, body: bytes) -> list[Submitted]: ...


class Webhooks(Protocol):
    """An adapter whose provider POSTs results to the receiver."""

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[Completion]: ...


class SignedWebhooks(Webhooks, Protocol):
    """A webhook adapter that can check the provider's signature (when its secret is set)."""

    def verify_webhook(self, secret: str, body: bytes, headers: Mapping[str, str]) -> bool: ...


class Polls(Protocol):
    """An adapter with a status endpoint the reconciler (and Oxen's catch-up) can poll."""

    def build_poll(self, provider_job_id: str, *, api_key: str) -> ProviderRequest: ...

    def parse_poll(self, body: bytes) -> list[Completion]: ...


class KnowsIdsEarly(Protocol):
    """An adapter whose job ids are chosen by the receiver (Runware's taskUUID): known before the answer."""

    def submitted_before(self, request: ProviderRequest) -> list[Submitted]: ...


@dataclass(frozen=True, slots=True)
class Provider:
    """What the rest of the receiver needs to know of one provider: its adapter, seen through the
    capabilities it has (None where the provider lacks one), and how it is reached."""

    name: str
    adapter: Submits
    submit_answer: ParsesSubmit | None = None
    webhook: Webhooks | None = None
    # The setting whose value verifies its webhooks' signatures (checked only when it is set), if any.
    webhook_secret: str | None = None
    signed_webhook: SignedWebhooks | None = None
    poll: Polls | None = None
    early_ids: KnowsIdsEarly | None = None
    # The submit's own answer holds the result (Lumenfall's images), so the receiver runs the call in the
    # background; the others acknowledge and deliver later (webhook, stream, poll).
    answers_synchronously: bool = False
    # The caller's Idempotency-Key is sent as the provider's own request id (the provider dedups too).
    forwards_idempotency_key: bool = False

    @property
    def base_url(self) -> str:
        """The provider's API, which `RECEIVER_{PROVIDER}_BASE_URL` overrides."""
        return self.adapter.BASE_URL

    @property
    def webhooks(self) -> bool:
        return self.webhook is not None

    @property
    def polls(self) -> bool:
        """Has a status endpoint the reconciler (and Oxen's catch-up) can poll."""
        return self.poll is not None

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[Completion]:
        if self.webhook is None:
            raise TypeError(f"{self.name} sends no webhooks")
        return self.webhook.parse_webhook(headers, body)

    def verify_webhook(self, secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
        if self.signed_webhook is None:
            raise TypeError(f"{self.name} signs no webhooks")
        return self.signed_webhook.verify_webhook(secret, body, headers)

    def build_submit(self, spec: GenerationSpec, *, api_key: str, webhook_url: str, request_id: str) -> ProviderRequest:
        return self.adapter.build_submit(spec, api_key=api_key, webhook_url=webhook_url, request_id=request_id)

    def parse_submit(self, request: ProviderRequest, body: bytes) -> list[Submitted]:
        if self.submit_answer is None:
            raise TypeError(f"{self.name} answers its submit synchronously")
        return self.submit_answer.parse_submit(request, body)

    def submitted_before(self, request: ProviderRequest) -> list[Submitted]:
        """The jobs known before the provider answers (their ids are ours: Runware's taskUUID), if any."""
        return self.early_ids.submitted_before(request) if self.early_ids is not None else []

    def build_poll(self, provider_job_id: str, *, api_key: str) -> ProviderRequest:
        if self.poll is None:
            raise TypeError(f"{self.name} has no status endpoint")
        return self.poll.build_poll(provider_job_id, api_key=api_key)

    def parse_poll(self, body: bytes) -> list[Completion]:
        if self.poll is None:
            raise TypeError(f"{self.name} has no status endpoint")
        return self.poll.parse_poll(body)


# Each record names the adapter once per capability it has, so mypy checks the module against
# that capability's protocol: a missing or mistyped function is a type error, not a runtime surprise.
REGISTRY: dict[str, Provider] = {
    p.name: p
    for p in (  # in the order people see them listed
        Provider("pixazo", pixazo, submit_answer=pixazo, webhook=pixazo, poll=pixazo),
        Provider("runware", runware, submit_answer=runware, webhook=runware, poll=runware, early_ids=runware),
        Provider(
            "apiframe",
            apiframe,
            submit_answer=apiframe,
            webhook=apiframe,
            webhook_secret="apiframe_api_key",
            signed_webhook=apiframe,
            poll=apiframe,
            forwards_idempotency_key=True,
        ),
        Provider(
            "lumenfall",
            lumenfall,
            webhook=lumenfall,
            webhook_secret="lumenfall_webhook_secret",
            signed_webhook=lumenfall,
            answers_synchronously=True,
        ),
        Provider("oxen", oxen, submit_answer=oxen, poll=oxen),
    )
}
assert set(REGISTRY) == set(PROVIDERS), "the registry and models.ProviderName must name the same providers"
assert not any(p.polls and p.answers_synchronously for p in REGISTRY.values()), "a synchronous call has nothing to poll"
assert all((p.webhook_secret is None) == (p.signed_webhook is None) for p in REGISTRY.values())

WEBHOOK_PROVIDERS: tuple[str, ...] = tuple(p.name for p in REGISTRY.values() if p.webhooks)
POLLING_PROVIDERS: tuple[str, ...] = tuple(p.name for p in REGISTRY.values() if p.polls)

__all__ = ["POLLING_PROVIDERS", "REGISTRY", "WEBHOOK_PROVIDERS", "Provider"]
