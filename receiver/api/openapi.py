"""`GET /openapi.json`: the `/v1` API as OpenAPI 3.1, built from the pydantic models that validate its
requests (receiver.web.validation, receiver.api.generations) and models of its answers (below)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import receiver
from receiver.api.generations import Generate
from receiver.api.sinks import Rewind
from receiver.models import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDEMPOTENCY_TTL_S,
    DeliveryStatus,
    JobStatus,
    Outcome,
    ReceiptSource,
    StreamState,
)
from receiver.providers import PROVIDER_NAMES
from receiver.web.validation import PatchJob, ProviderName, Redeliveries, RedeliverTo, RegisterJob

# -- answers ---------------------------------------------------------------------------------------


class OutputOut(BaseModel):
    model_config = ConfigDict(title="Output")

    url: str  # where the provider put it
    media_type: str | None
    stored_url: str | None  # the receiver's copy, once mirrored (RECEIVER_MEDIA_URL)
    sha256: str | None
    bytes: int | None
    mirror_error: str | None  # why the copy failed; the job keeps the provider's URL


class JobOut(BaseModel):
    model_config = ConfigDict(title="Job")

    id: str
    provider: ProviderName
    provider_job_id: str
    status: JobStatus
    outputs: list[OutputOut]
    error: str | None
    metadata: dict[str, Any]
    callback_url: str | None
    delivery_status: DeliveryStatus
    created_at: str
    completed_at: str | None


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None
    total: int | None = None  # first page only: how many match, exact up to 10,000
    total_exact: bool | None = None  # false: more than `total` match


class Generated(BaseModel):
    jobs: list[JobOut]


class SentOut(BaseModel):
    headers: dict[str, str]
    body: str | None


class AnswerOut(BaseModel):
    status_code: int | None
    headers: dict[str, str]
    body: str | None  # the first 4 KiB


class DeliveryOut(BaseModel):
    model_config = ConfigDict(title="Delivery")

    message_id: str
    url: str
    attempt: int
    status_code: int | None
    error: str | None
    at: str | None  # null on a message still waiting to be sent (it has `next_attempt_at`)
    next_attempt_at: str | None = None
    request: SentOut | None = None  # what was sent (attempts recorded since v0.3)
    response: AnswerOut | None = None  # what came back; null without an answer


class Deliveries(BaseModel):
    deliveries: list[DeliveryOut]


class Redelivered(BaseModel):
    message_id: str
    url: str
    job_id: str
    retried: bool  # true: a message already waiting was made due now (the same webhook-id)


class Count(BaseModel):
    count: int


class ReceiptOut(BaseModel):
    model_config = ConfigDict(title="Receipt")

    id: int
    provider: str
    source: ReceiptSource
    outcome: Outcome
    provider_job_ids: list[str]
    job_ids: list[str]
    error: str | None
    body: str
    received_at: str
    headers: dict[str, str] = {}  # the kept request headers, signature values masked
    body_base64: str | None = None  # only when the body is not UTF-8 (`body` then has U+FFFD for bad bytes)


class ReceiptPage(BaseModel):
    receipts: list[ReceiptOut]
    next_cursor: str | None
    total: int | None = None
    total_exact: bool | None = None


class RefusalOut(BaseModel):
    model_config = ConfigDict(title="Refusal")

    id: int
    provider: str
    reason: Literal["unknown_provider", "unauthorized", "bad_signature", "too_large", "invalid_body"]
    status: int
    detail: str | None
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str
    body_bytes: int
    body_truncated: bool
    receipt_id: int | None
    received_at: str
    body_base64: str | None = None  # only when the body is not UTF-8


class RefusalPage(BaseModel):
    refusals: list[RefusalOut]
    next_cursor: str | None
    total: int | None = None
    total_exact: bool | None = None


class Backlog(BaseModel):
    count: int
    oldest_age_s: float | None


class SinkOut(BaseModel):
    model_config = ConfigDict(title="Sink")

    name: str
    url: str
    state: Literal["ok", "failing", "paused"]
    last_event_id: int
    lag: int
    last_error: str | None
    last_published_at: str | None


class SinkList(BaseModel):
    sinks: list[SinkOut]


class ProviderOut(BaseModel):
    model_config = ConfigDict(title="Provider")

    name: ProviderName
    webhooks: bool  # takes webhooks at /webhooks/{name}


class StatsOut(BaseModel):
    model_config = ConfigDict(title="Stats")

    store: str
    store_state: Literal["ok", "unreachable"]
    public_url: str
    mirroring: bool
    oxen_stream: StreamState
    oxen_stream_error: str | None
    jobs: dict[str, int]
    delivery_backlog: Backlog
    sinks: list[SinkOut] = []
    providers: list[ProviderOut]  # in the order they are listed


class FieldError(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    model_config = ConfigDict(title="Error")

    error: str
    message: str
    fields: list[FieldError] | None = None  # 422 invalid_request: each field and what is wrong with it
    setting: str | None = None  # the RECEIVER_* setting to fix
    provider_status: int | None = None  # 502 provider_refused: the provider's HTTP status
    job: JobOut | None = None  # 409 already_terminal: the job as it is


# -- the document ----------------------------------------------------------------------------------

_REQUESTS: list[type[BaseModel]] = [RegisterJob, Generate, PatchJob, RedeliverTo, Redeliveries, Rewind]
_ANSWERS: list[type[BaseModel]] = [
    JobOut,
    JobPage,
    Generated,
    Deliveries,
    Redelivered,
    Count,
    ReceiptPage,
    RefusalPage,
    StatsOut,
    ErrorOut,
    SinkOut,
    SinkList,
]


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_ERRORS = {
    "401": _json(ErrorOut, "missing or wrong bearer token"),
    "413": _json(ErrorOut, "body too large"),
    "422": _json(ErrorOut, "bad request: names the field"),
    "503": _json(ErrorOut, "the store is unavailable; retry"),
}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_TIME = {"type": "string", "description": "ISO 8601, e.g. 2026-11-21T10:00:00Z"}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_SINK = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
    _query("cursor", {"type": "string", "pattern": "^[0-9]{1,18}$"}, "next_cursor of the page before"),
]


def _op(
    summary: str,
    answers: dict[str, Any],
    *,
    body: type[BaseModel] | None = None,
    required: bool = True,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**answers, **_ERRORS}, "parameters": params or []}
    if body is not None:
        op["requestBody"] = {"required": required, "content": {"application/json": {"schema": _ref(body)}}}
    return op


def _paths() -> dict[str, Any]:
    not_found = {"404": _json(ErrorOut, "no such job")}
    conflict = {"409": _json(ErrorOut, "not possible in the job's state")}
    return {
        "/v1/jobs": {
            "post": _op(
                "Register a job",
                {"201": _json(JobOut, "created"), "200": _json(JobOut, "already registered")},
                body=RegisterJob,
            ),
            "get": _op(
                "List jobs, newest first",
                {"200": _json(JobPage, "a page")},
                params=[
                    _query("provider", {"type": "string", "enum": list(PROVIDER_NAMES)}),
                    _query("status", {"type": "string", "enum": [s.value for s in JobStatus]}),
                    _query("delivery_status", {"type": "string", "enum": [d.value for d in DeliveryStatus]}),
                    _query("provider_job_id", {"type": "string", "maxLength": 512}),
                    _query(
                        "prefix", {"type": "string", "maxLength": 255}, "the start of the job's id or provider job id"
                    ),
                    _query("since", _TIME, "on created_at"),
                    _query("until", _TIME, "on created_at"),
                    *_PAGE,
                ],
            ),
        },
        "/v1/jobs/{job_id}": {
            "get": _op(
                "A job; with ?wait=S held until terminal or S seconds",
                {"200": _json(JobOut, "the job"), **not_found},
                params=[_JOB_ID, _query("wait", {"type": "number", "minimum": 0, "maximum": 60})],
            ),
            "patch": _op(
                "Change where its next messages go and what they carry",
                {"200": _json(JobOut, "the job"), **not_found},
                body=PatchJob,
                params=[_JOB_ID],
            ),
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": _op(
                "Cancel a pending job", {"200": _json(JobOut, "cancelled"), **not_found, **conflict}, params=[_JOB_ID]
            ),
        },
        "/v1/jobs/{job_id}/deliveries": {
            "get": _op(
                "Delivery attempts, oldest first", {"200": _json(Deliveries, "attempts"), **not_found}, params=[_JOB_ID]
            ),
        },
        "/v1/jobs/{job_id}/redeliver": {
            "post": _op(
                "Send a terminal job's result again, as a new message",
                {"202": _json(Redelivered, "queued"), **not_found, **conflict},
                body=RedeliverTo,
                required=False,
                params=[_JOB_ID],
            ),
        },
        "/v1/redeliveries": {
            "post": _op(
                "Send again every terminal job that finished in [since, until)",
                {"202": _json(Count, "queued")},
                body=Redeliveries,
            ),
        },
        "/v1/generations": {
            "post": _op(
                "Submit a generation to a provider",
                {
                    "202": _json(Generated, "submitted"),
                    "409": _json(ErrorOut, "its Idempotency-Key is in use"),
                    "502": _json(ErrorOut, "the provider refused"),
                },
                body=Generate,
                params=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
                        "description": f"a repeat within {IDEMPOTENCY_TTL_S / 3600:g} h answers the same jobs",
                    }
                ],
            ),
        },
        "/v1/receipts": {
            "get": _op(
                "Stored inbound messages, newest first",
                {"200": _json(ReceiptPage, "a page")},
                params=[
                    _query("provider", {"type": "string", "enum": list(PROVIDER_NAMES)}),
                    _query("outcome", {"type": "string", "enum": [o.value for o in Outcome]}),
                    _query("job_id", {"type": "string", "maxLength": 512}),
                    *_PAGE,
                ],
            ),
        },
        "/v1/refusals": {
            "get": _op(
                "Refused inbound requests (the newest 10,000 kept), newest first",
                {"200": _json(RefusalPage, "a page")},
                params=[
                    _query("provider", {"type": "string", "maxLength": 64}),
                    _query(
                        "reason",
                        {
                            "type": "string",
                            "enum": ["unknown_provider", "unauthorized", "bad_signature", "too_large", "invalid_body"],
                        },
                    ),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _PAGE[1],
                ],
            ),
        },
        "/v1/stats": {
            "get": _op(
                "The store, jobs by status, the callback backlog (the Inspector's summary)",
                {"200": _json(StatsOut, "the figures")},
            ),
        },
        "/v1/sinks": {
            "get": _op("Each configured sink: state, position, lag, last error", {"200": _json(SinkList, "the sinks")}),
        },
        "/v1/sinks/{name}/rewind": {
            "post": _op(
                "Publish again from an event id or a completion time",
                {
                    "200": _json(SinkOut, "the sink"),
                    "404": _json(ErrorOut, "no such sink"),
                    "409": _json(ErrorOut, "last_event_id ahead of the store"),
                },
                body=Rewind,
                params=[_SINK],
            ),
        },
        "/v1/sinks/{name}/pause": {
            "post": _op(
                "Stop publishing to a sink",
                {"200": _json(SinkOut, "the sink"), "404": _json(ErrorOut, "no such sink")},
                params=[_SINK],
            ),
        },
        "/v1/sinks/{name}/resume": {
            "post": _op(
                "Publish again (also after a refused message)",
                {"200": _json(SinkOut, "the sink"), "404": _json(ErrorOut, "no such sink")},
                params=[_SINK],
            ),
        },
        "/v1/events": {
            "get": _op(
                "Terminal jobs as Server-Sent Events",
                {
                    "200": {
                        "description": "an event stream; each event's data is a Job",
                        "content": {"text/event-stream": {"schema": {"type": "string"}, "x-event-data": _ref(JobOut)}},
                    },
                    "409": _json(ErrorOut, "Last-Event-ID ahead of the store"),
                    "422": _json(ErrorOut, "since is not an ISO 8601 time"),
                },
                params=[
                    _query("last_event_id", {"type": "string", "pattern": "^[0-9]{1,19}$"}),
                    _query("since", _TIME, "replay the events of jobs completed at or after it (completed_at)"),
                    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
                ],
            ),
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (pure)."""
    _, requests = models_json_schema(
        [(m, "validation") for m in _REQUESTS], ref_template="#/components/schemas/{model}"
    )
    _, answers = models_json_schema(
        [(m, "serialization") for m in _ANSWERS], ref_template="#/components/schemas/{model}"
    )
    schemas = {**requests.get("$defs", {}), **answers.get("$defs", {})}
    return {
        "openapi": "3.1.0",
        "info": {"title": "receiver", "version": receiver.__version__},
        "paths": _paths(),
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())
