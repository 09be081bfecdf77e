"""The normalized vocabulary every provider adapter speaks, and the job as the API shows it."""

from __future__ import annotations

import base64
import enum
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

# `Idempotency-Key` on `POST /v1/generations`, passed on as the provider's own key where it takes one: 1 to
# IDEMPOTENCY_KEY_MAX_LENGTH printable ASCII characters (what the providers accept), and a repeat within
# IDEMPOTENCY_TTL_S answers the same jobs (a client's retries span hours at most).
IDEMPOTENCY_KEY_MAX_LENGTH = 255
IDEMPOTENCY_TTL_S = 24 * 3600.0


# On the path of every webhook these enums' values are read as `._value_`, a plain attribute, where `.value`
# is a property that costs several times as much (Python 3.11); both are the same string.
class JobStatus(str, enum.Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not JobStatus.PENDING


class Outcome(str, enum.Enum):
    """What a stored receipt did (README.md, `GET /v1/receipts`)."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    INVALID = "invalid"


# Where an inbound message came from: a provider's webhook, Oxen's stream, a status poll, or the answer
# to a call the receiver made (Lumenfall's synchronous generation).
ReceiptSource = Literal["webhook", "stream", "poll", "response"]
# What came of one status poll at a provider (`receiver_reconcile_polls_total{result}`).
PollResult = Literal["terminal", "pending", "invalid", "error"]
# A callback message's state: waiting for (another) attempt, or done one way or the other.
MessageStatus = Literal["pending", "delivered", "failed"]
# What came of one callback attempt (`receiver_deliveries_total{outcome}`).
AttemptOutcome = Literal["delivered", "retry", "failed"]
# The Oxen consumer as /readyz says (`receiver_oxen_stream_state{state}`); `standby`: another replica has it.
StreamState = Literal["disabled", "connecting", "connected", "unauthorized", "standby"]
# How one attempt to mirror an output ended (`receiver_media_mirrors_total{outcome}`).
MirrorOutcome = Literal["stored", "gave_up", "retry"]


class DeliveryStatus(str, enum.Enum):
    NONE = "none"
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Output:
    url: str
    media_type: str | None = None
    # A provider's own id for this output (Runware imageUUID); outputs are deduplicated on it,
    # or on the URL when the provider gives none.
    key: str | None = None
    # Its mirror (see receiver.media.mirror): where the copy is served, its digest and size, or why not.
    stored_url: str | None = None
    sha256: str | None = None
    size: int | None = None
    mirror_error: str | None = None
    awaiting: bool = False  # its mirror holds back the job's event and callback

    @property
    def identity(self) -> str:
        return self.key or self.url

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "media_type": self.media_type,
            "stored_url": self.stored_url,
            "sha256": self.sha256,
            "bytes": self.size,
            "mirror_error": self.mirror_error,
        }


@dataclass(frozen=True, slots=True)
class Completion:
    """One provider's word about one of its jobs, normalized.

    `status` PENDING means progress: valid, but it changes no job.
    `partial` means the outputs are some of the job's results (Runware posts one image per call):
    the job completes once `expected_outputs` distinct outputs have arrived.
    """

    provider: str
    provider_job_id: str
    status: JobStatus
    outputs: tuple[Output, ...] = ()
    error: str | None = None
    partial: bool = False


@dataclass(frozen=True, slots=True)
class Receipt:
    """An inbound message exactly as it arrived, before anything is made of it."""

    provider: str
    source: ReceiptSource
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Job:
    id: str
    provider: str
    provider_job_id: str
    status: JobStatus
    outputs: list[Output]
    error: str | None
    metadata: dict[str, Any]
    callback_url: str | None
    delivery_status: DeliveryStatus
    created_at: str
    completed_at: str | None
    registered: bool = False
    expected_outputs: int | None = None
    seq: int = 0
    poll_count: int = 0  # status polls made so far (the reconciler's backoff)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "provider_job_id": self.provider_job_id,
            "status": self.status._value_,
            "outputs": [o.to_json() for o in self.outputs],
            "error": self.error,
            "metadata": self.metadata,
            "callback_url": self.callback_url,
            "delivery_status": self.delivery_status._value_,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
        }


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    id: int
    provider: str
    source: ReceiptSource
    outcome: Outcome
    provider_job_ids: list[str]
    error: str | None
    body: bytes
    received_at: str
    job_ids: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "source": self.source,
            "outcome": self.outcome.value,
            "provider_job_ids": self.provider_job_ids,
            "job_ids": self.job_ids,
            "error": self.error,
            **body_fields(self.body),
            "received_at": self.received_at,
            # A signature is proof made with the provider's secret: shown as present, never its value.
            "headers": {k: ("***" if "signature" in k else v) for k, v in self.headers.items()},
        }


def body_fields(body: bytes) -> dict[str, str]:
    """Raw bytes as an answer shows them: `body` as text, plus `body_base64` when they are not UTF-8."""
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body": body.decode("utf-8", "replace"), "body_base64": base64.b64encode(body).decode("ascii")}


# Not frozen: one is made per webhook and only read after, and a frozen dataclass's __init__ costs several times
# as much.
@dataclass(slots=True)
class ApplyResult:
    receipt_id: int
    outcome: Outcome
    job_ids: list[str]
    terminal_job_ids: list[str]
    error: str | None = None


def event_type(status: JobStatus) -> str:
    """`job.succeeded` etc.: the name used on /v1/events and in callback bodies."""
    return f"job.{status._value_}"


def iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def dumps(value: Any) -> str:
    """Compact one-line JSON, the form used in events, callbacks and the store."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # e.g. an integer wider than 64 bits in user metadata
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def callback_body(job: Job, timestamp: str) -> bytes:
    """The downstream callback body: `{"type", "timestamp" (ISO, `iso_time`), "data": job}`."""
    return envelope(event_type(job.status), timestamp, job.to_json())


def envelope(type_: str, timestamp: str, data: dict[str, Any]) -> bytes:
    """A callback body from its parts (also what `receiver listen` forwards for an event)."""
    return dumps({"type": type_, "timestamp": timestamp, "data": data}).encode()
