"""Request bodies and query strings of the /v1 API, validated with pydantic into 422s that name the field."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError
from starlette.responses import JSONResponse

from receiver.errors import ReceiverError
from receiver.providers import PROVIDER_NAMES
from receiver.util.urls import check_callback_url
from receiver.web.http import error

Model = TypeVar("Model", bound=BaseModel)
# What the OpenAPI document says of URLs and times; the validators below check more than a schema can.
URL_SCHEMA: dict[str, Any] = {"pattern": r"^https?://[^\s/?#]+", "format": "uri"}
TIME_SCHEMA: dict[str, Any] = {"format": "date-time"}
# A callback URL in a request body (null: none, or the default): the one check, `urls.check_callback_url`.
CallbackUrl = Annotated[
    str | None, Field(max_length=2048, json_schema_extra=URL_SCHEMA), AfterValidator(check_callback_url)
]


# An unknown provider's error, worded as pydantic words a Literal's: "Input should be 'pixazo', … or 'oxen'".
_NAMES = [repr(name) for name in PROVIDER_NAMES]
_EXPECTED = " or ".join(filter(None, [", ".join(_NAMES[:-1]), _NAMES[-1]]))


def _known_provider(value: str) -> str:
    if value not in PROVIDER_NAMES:
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": _EXPECTED})
    return value


# A provider's name in a request or an answer: one of the registry's (receiver.providers), listed as an
# enum in the OpenAPI document.
ProviderName = Annotated[
    str, AfterValidator(_known_provider), WithJsonSchema({"type": "string", "enum": list(PROVIDER_NAMES)})
]
MAX_SEQ = 2**63 - 1  # event ids and page cursors are 64-bit integers in both stores


def parse_seq(raw: str, *, max_digits: int = 19) -> int | None:
    """An event id or a page cursor as this API hands them out (ASCII digits within MAX_SEQ), else None."""
    # isascii: str.isdigit() also accepts digits int() refuses ("²").
    if not (raw.isascii() and raw.isdigit()) or len(raw) > max_digits:
        return None
    value = int(raw)
    return value if value <= MAX_SEQ else None


class RegisterJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: ProviderName
    provider_job_id: str = Field(min_length=1, max_length=512)
    callback_url: CallbackUrl = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    expected_outputs: int | None = Field(default=None, ge=1, le=100)

    @field_validator("provider_job_id")
    @classmethod
    def _provider_job_id(cls, value: str) -> str:
        # Adapters strip the ids providers send: an id with spaces around it would never be matched.
        if value != value.strip():
            raise ValueError("must not start or end with whitespace")
        if not value.isprintable():
            raise ValueError("must not contain control characters (tabs, newlines)")
        return value


class PatchJob(BaseModel):
    """`PATCH /v1/jobs/{id}`: only the fields given change; `callback_url: null` falls back to the default."""

    model_config = ConfigDict(extra="forbid")

    callback_url: CallbackUrl = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RedeliverTo(BaseModel):
    """`POST /v1/jobs/{id}/redeliver`'s optional body."""

    model_config = ConfigDict(extra="forbid")

    url: CallbackUrl = None


class Redeliveries(BaseModel):
    """`POST /v1/redeliveries`: terminal jobs that finished in [since, until) (ISO 8601, on completed_at)."""

    model_config = ConfigDict(extra="forbid")

    since: str = Field(max_length=64, json_schema_extra=TIME_SCHEMA)
    until: str | None = Field(default=None, max_length=64, json_schema_extra=TIME_SCHEMA)
    provider: ProviderName | None = None
    delivery_status: Literal["none", "pending", "delivered", "failed"] | None = None

    @field_validator("since", "until")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value


class Invalid(ReceiverError):
    """A request the API refuses; `response` is its 422 answer, naming the field."""

    def __init__(self, response: JSONResponse) -> None:
        self.response = response


def invalid(field: str, message: str) -> Invalid:
    return Invalid(error(422, "invalid_request", f"{field}: {message}", fields=[{"field": field, "message": message}]))


MAX_DEPTH = 32  # nesting of a request body; metadata and params are echoed, stored and sent back


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _unstorable(value: Any) -> str | None:
    """What makes a decoded body unfit to store and send back, if anything (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate escape, "\ud800": no UTF-8 column takes it
                return "holds an unpaired UTF-16 surrogate"
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return None


def parse_body(model: type[Model], body: bytes) -> Model:
    try:
        # NaN, Infinity and 1e999 would be stored, then fail every JSON answer that holds them.
        raw = json.loads(body or b"null", parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise invalid("body", f"nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:  # also integers of more than 4300 digits
        raise invalid("body", f"not JSON: {exc}") from None
    problem = _unstorable(raw)
    if problem is not None:
        raise invalid("body", problem)
    if not isinstance(raw, dict):
        raise invalid("body", "expected a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        fields = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise Invalid(error(422, "invalid_request", summary, fields=fields)) from None


def query_int(params: Any, name: str, default: int, *, low: int, high: int) -> int:
    value = _query_number(params, name, int, "an integer", low=low, high=high)
    return default if value is None else value


def query_float(params: Any, name: str, *, low: float, high: float) -> float | None:
    return _query_number(params, name, float, "a number", low=low, high=high)


Number = TypeVar("Number", int, float)


def _query_number(params: Any, name: str, kind: type[Number], what: str, *, low: Number, high: Number) -> Number | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise invalid(name, f"must be {what}") from None
    if not low <= value <= high:
        raise invalid(name, f"must be between {low:g} and {high:g}")
    return value


def query_choice(params: Any, name: str, choices: tuple[str, ...]) -> str | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise invalid(name, f"must be one of {', '.join(choices)}")
    return str(raw)


def query_cursor(params: Any) -> str | None:
    raw = params.get("cursor")
    if raw is None or raw == "":
        return None
    if parse_seq(raw, max_digits=18) is None:  # as the OpenAPI document says: 1 to 18 digits
        raise invalid("cursor", "not a cursor this API returned")
    return str(raw)


def known_params(params: Any, known: frozenset[str]) -> None:
    """Unknown query parameters are refused: a misspelt filter must not silently return everything."""
    for name in params.keys():
        if name not in known:
            raise invalid(name, f"unknown query parameter; known: {', '.join(sorted(known))}")


def query_text(params: Any, name: str, *, max_length: int = 512) -> str | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise invalid(name, f"longer than {max_length} characters")
    return str(raw)


def parse_time(raw: str) -> float:
    """An ISO 8601 time (`2026-11-21T10:00:00Z`; no zone means UTC) as epoch seconds; ValueError if not one."""
    try:
        when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 time, e.g. 2026-11-21T10:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def query_time(params: Any, name: str) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise invalid(name, str(exc)) from None
