"""One exception tree for the receiver."""

from __future__ import annotations


class ReceiverError(Exception):
    """Base of every error the receiver raises on purpose."""


class InvalidPayload(ReceiverError):
    """A body that is not JSON, or not the provider's shape. The message says what is wrong."""


class StoreError(ReceiverError):
    """The store could not do what was asked."""


class StoreUnavailable(StoreError):
    """The database is unreachable, or busy past its wait: the request may be retried (503)."""


class ProviderError(ReceiverError):
    """A provider refused or failed a request we made to it."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotConfigured(ReceiverError):
    """A setting needed for this action is missing; `setting` names it."""

    def __init__(self, setting: str) -> None:
        super().__init__(f"{setting} is not set")
        self.setting = setting
