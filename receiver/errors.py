"""One exception tree for the receiver: every exception it defines is a ReceiverError.

ReceiverError                       every error the receiver raises on purpose
├── InvalidPayload                  a body that is not JSON or not the provider's shape (→ 400, kept as invalid)
├── StoreError                      the store could not do what was asked
│   └── StoreUnavailable            the database is unreachable or busy past its wait (→ 503, retry)
├── ProviderError                   a provider refused or failed our request (→ 502 on a submit, retry a poll)
├── NotConfigured                   a setting this action needs is missing (→ 422 naming it)
│
│   local to one module, and caught there:
├── web.http.BodyTooLarge           a body over its limit (→ 413)
├── web.validation.Invalid          a request the API refuses (→ its 422 answer)
├── providers._request.BadGeneration  a generation this provider cannot take (→ 422 naming the field)
├── media.sign.Unsatisfiable        a byte range outside the object (→ 416)
├── media.guard.MirrorFailure       why an output could not be mirrored (→ retried, or given up)
├── media.fetch.RefusedAddress      a name that resolves only to refused addresses (also an OSError,
│                                   as aiohttp's resolver raises; → a MirrorFailure)
├── ingest.oxen_stream.StreamFailure  why Oxen's stream ended (→ reconnect)
├── util.bounded_sse.Oversized      a stream line or event over its cap (→ kept as invalid, or
│                                   skipped by `receiver listen`; reconnect)
├── relay.listen._Retry             a connection of `receiver listen` worth retrying
├── relay.listen.ListenError        ends `receiver listen` (→ its exit message and status)
└── relay.state.StateError          `receiver listen`'s state file cannot be used (→ the same)
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
