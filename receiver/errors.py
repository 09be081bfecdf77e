"""One exception tree for the receiver.

    ReceiverError                  every error the receiver raises on purpose
    ├── InvalidPayload             a body that is not JSON or not the provider's shape (→ 400, kept as invalid)
    ├── StoreError                 the store could not do what was asked
    │   └── StoreUnavailable       the database is unreachable or busy past its wait (→ 503, retry)
    ├── ProviderError              a provider refused or failed our request (→ 502 on a submit)
    └── NotConfigured              a setting this action needs is missing (→ 422 naming it)

Errors that never leave their module are local on purpose and caught there: `http.BodyTooLarge`
(→ 413), `validation.Invalid` (→ 422), `oxen_stream.StreamFailure` and `bounded_sse.Oversized`
(→ reconnect), `sse_lines.LineTooLong`, `listen.ListenError` and `listen_state.StateError` (→ the
`receiver listen` exit message).
"""

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
