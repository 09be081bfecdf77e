"""The record each adapter module declares as `PROVIDER`, and the signatures of the functions it names.

The record holds the adapter's functions themselves, each typed by a protocol: mypy checks every
function a module puts in its record against that capability's signature, so a missing or mistyped
function is a type error where the record is written, not a runtime surprise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from receiver.models import Completion
from receiver.providers._request import GenerationSpec, ProviderRequest, Submitted

# A provider's name is its module's name, a URL segment (`/webhooks/<name>`) and part of its settings'
# variable names (`RECEIVER_<NAME>_API_KEY`): plain lowercase, so that none of them needs escaping.
NAME = re.compile(r"[a-z][a-z0-9]*")
# The name of one of its secret settings (`RECEIVER_<NAME>_<KEY>`), besides the API key.
SETTING_KEY = re.compile(r"[a-z][a-z0-9_]*")


class RegistryError(Exception):
    """An adapter module whose record is missing or contradicts itself: raised when the registry loads."""


# Positional parameters are positional-only here: the adapters may name them as their provider does.


class BuildSubmit(Protocol):
    """The submit call: every provider has one."""

    def __call__(
        self, spec: GenerationSpec, /, *, api_key: str, webhook_url: str, request_id: str
    ) -> ProviderRequest: ...


class ParseSubmit(Protocol):
    """What an acknowledged submit's answer means (the result comes later: webhook, stream or poll)."""

    def __call__(self, request: ProviderRequest, body: bytes, /) -> list[Submitted]: ...


class ParseWebhook(Protocol):
    """A webhook's body (and headers) as completions."""

    def __call__(self, headers: Mapping[str, str], body: bytes, /) -> list[Completion]: ...


class VerifyWebhook(Protocol):
    """Whether a webhook carries the provider's valid signature, given the secret it is keyed with."""

    def __call__(self, secret: str, body: bytes, headers: Mapping[str, str], /) -> bool: ...


class BuildPoll(Protocol):
    """The status request for one job."""

    def __call__(self, provider_job_id: str, /, *, api_key: str) -> ProviderRequest: ...


class ParsePoll(Protocol):
    """A status answer as completions."""

    def __call__(self, body: bytes, /) -> list[Completion]: ...


class SubmittedBefore(Protocol):
    """The jobs of a submit known before the provider answers (their ids are chosen by the receiver)."""

    def __call__(self, request: ProviderRequest, /) -> list[Submitted]: ...


@dataclass(frozen=True, slots=True)
class Provider:
    """What the rest of the receiver needs to know of one provider: the adapter's functions for the
    capabilities it has (None where it lacks one), how it is reached, and where it is listed."""

    name: str  # the module's name
    order: int  # where it is listed among the providers (ties: by name)
    base_url: str  # the provider's API, which `RECEIVER_{NAME}_BASE_URL` overrides
    build_submit: BuildSubmit
    submit_answer: ParseSubmit | None = None
    webhook: ParseWebhook | None = None
    webhook_signature: VerifyWebhook | None = None
    # Which of its secret settings keys `webhook_signature`: "api_key", or one of `secret_settings`.
    webhook_secret: str | None = None
    # Secret settings it has besides the API key, each `RECEIVER_{NAME}_{KEY}` (empty is unset, never logged).
    secret_settings: tuple[str, ...] = ()
    poll: BuildPoll | None = None
    poll_answer: ParsePoll | None = None
    early_ids: SubmittedBefore | None = None
    # The submit's own answer holds the result (Lumenfall's images), so the receiver runs the call in the
    # background; the others acknowledge and deliver later (webhook, stream, poll).
    answers_synchronously: bool = False
    # The caller's Idempotency-Key is sent as the provider's own request id (the provider dedups too).
    forwards_idempotency_key: bool = False

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
        return self.webhook(headers, body)

    def verify_webhook(self, secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
        if self.webhook_signature is None:
            raise TypeError(f"{self.name} signs no webhooks")
        return self.webhook_signature(secret, body, headers)

    def parse_submit(self, request: ProviderRequest, body: bytes) -> list[Submitted]:
        if self.submit_answer is None:
            raise TypeError(f"{self.name} answers its submit synchronously")
        return self.submit_answer(request, body)

    def submitted_before(self, request: ProviderRequest) -> list[Submitted]:
        """The jobs known before the provider answers (their ids are ours: Runware's taskUUID), if any."""
        return self.early_ids(request) if self.early_ids is not None else []

    def build_poll(self, provider_job_id: str, *, api_key: str) -> ProviderRequest:
        if self.poll is None:
            raise TypeError(f"{self.name} has no status endpoint")
        return self.poll(provider_job_id, api_key=api_key)

    def parse_poll(self, body: bytes) -> list[Completion]:
        if self.poll_answer is None:
            raise TypeError(f"{self.name} has no status endpoint")
        return self.poll_answer(body)

    @property
    def setting_keys(self) -> tuple[str, ...]:
        """Its settings, each `RECEIVER_{NAME}_{KEY}`: the API key, the base URL, and its other secrets."""
        return ("api_key", "base_url", *self.secret_settings)

    def problems(self) -> list[str]:
        """What contradicts itself in this record (empty when it is sound)."""
        found = []
        if not NAME.fullmatch(self.name):
            found.append(f"name {self.name!r} is not lowercase letters and digits")
        if self.polls and self.answers_synchronously:
            found.append("a synchronous call has nothing to poll")
        if (self.poll is None) != (self.poll_answer is None):
            found.append("poll and poll_answer go together (a status request and what its answer means)")
        if (self.submit_answer is None) != self.answers_synchronously:
            found.append("submit_answer is needed exactly when the submit does not answer synchronously")
        if (self.webhook_secret is None) != (self.webhook_signature is None):
            found.append("webhook_signature and webhook_secret go together")
        if self.webhook_signature is not None and self.webhook is None:
            found.append("webhook_signature without webhook")
        if self.webhook_secret is not None and self.webhook_secret not in ("api_key", *self.secret_settings):
            found.append(f"webhook_secret {self.webhook_secret!r} is neither 'api_key' nor one of secret_settings")
        for key in self.secret_settings:
            if not SETTING_KEY.fullmatch(key) or key in ("api_key", "base_url"):
                found.append(f"secret setting {key!r} is not a new lowercase name")
        return found
