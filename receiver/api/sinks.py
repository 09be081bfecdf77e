"""`/v1/sinks` (state, pause, resume, rewind) and `/asyncapi.json`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import receiver
from receiver.runtime import Runtime
from receiver.sinks.envelope import CONTENT_TYPE
from receiver.sinks.publisher import sink_key, sinks_listing
from receiver.sinks.urls import SinkSpec
from receiver.web.http import error, read_body
from receiver.web.validation import TIME_SCHEMA, known_params, parse_body, parse_time


class Rewind(BaseModel):
    """`POST /v1/sinks/{name}/rewind`: publish again every event after `last_event_id`, or every event of a
    job that completed at or after `since` (ISO 8601)."""

    model_config = ConfigDict(extra="forbid")

    last_event_id: int | None = Field(default=None, ge=0, le=2**63 - 1)
    since: str | None = Field(default=None, max_length=64, json_schema_extra=TIME_SCHEMA)

    @field_validator("since")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value

    @model_validator(mode="after")
    def _one(self) -> Rewind:
        if (self.last_event_id is None) == (self.since is None):
            raise ValueError("give exactly one of last_event_id and since")
        return self


def _spec(request: Request) -> SinkSpec | None:
    runtime: Runtime = request.state.runtime
    name = request.path_params["name"]
    return next((s for s in runtime.settings.sink_specs if s.name == name), None)


def _unknown(request: Request) -> Response:
    return error(404, "not_found", f"no sink named {request.path_params['name']!r} is configured")


async def _answer(runtime: Runtime, name: str) -> Response:
    runtime.notifier.publish(sink_key(name))
    listing = await sinks_listing(runtime)
    return JSONResponse(next(s for s in listing if s["name"] == name))


async def list_sinks(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    known_params(request.query_params, frozenset())
    return JSONResponse({"sinks": await sinks_listing(runtime)})


async def pause(request: Request) -> Response:
    return await _set_paused(request, True)


async def resume(request: Request) -> Response:
    """Resume a paused sink, or retry one stopped by a message its broker refused."""
    return await _set_paused(request, False)


async def _set_paused(request: Request, paused: bool) -> Response:
    runtime: Runtime = request.state.runtime
    spec = _spec(request)
    if spec is None:
        return _unknown(request)
    await runtime.store.change_sink(spec.name, paused=paused)
    return await _answer(runtime, spec.name)


async def rewind(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    spec = _spec(request)
    if spec is None:
        return _unknown(request)
    body = parse_body(Rewind, await read_body(request, runtime.settings.max_body_bytes))
    newest = await runtime.store.last_event_seq()
    if body.last_event_id is not None:
        if body.last_event_id > newest:
            return error(
                409,
                "last_event_id_ahead",
                f"last_event_id {body.last_event_id} is above the newest event ({newest})",
                last_event_id=newest,
            )
        position = body.last_event_id
    else:
        position = await runtime.store.event_seq_before(parse_time(body.since or ""))
    await runtime.store.change_sink(spec.name, position=position)
    return await _answer(runtime, spec.name)


# -- AsyncAPI 3.0 ---------------------------------------------------------------------------------

_PROTOCOLS = {"nats": "nats", "redis": "redis", "amqp": "amqp"}


def _channel(spec: SinkSpec) -> dict[str, Any]:
    if spec.kind == "nats":
        address = f"{spec.prefix}.{{type}}"
        description = f"JetStream stream {spec.target}: subject `{spec.prefix}.<type>`, header Nats-Msg-Id = event id"
    elif spec.kind == "redis":
        address = spec.target
        description = "Redis stream: entry id `<event id>-0`, fields `type`, `subject`, `event` (the CloudEvent)"
    else:
        address = "{type}"
        description = (
            f"durable topic exchange {spec.target}: routing key = type, persistent, "
            "message_id = event id, publisher confirms"
        )
    channel: dict[str, Any] = {
        "address": address,
        "description": description,
        "servers": [{"$ref": f"#/servers/{_key(spec)}"}],
        "messages": {"jobEvent": {"$ref": "#/components/messages/jobEvent"}},
    }
    if "{type}" in address:
        channel["parameters"] = {"type": {"enum": ["job.succeeded", "job.failed", "job.cancelled"]}}
    return channel


def _key(spec: SinkSpec) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in spec.name)


def asyncapi_document(specs: tuple[SinkSpec, ...]) -> dict[str, Any]:
    """AsyncAPI 3.0: each configured sink a channel; the payload's `data` is the job schema of `/openapi.json`."""
    from receiver.api.openapi import (
        JobOut,
    )  # the one job schema, shared with /openapi.json (imported late: it imports this module)

    _, defs = models_json_schema([(JobOut, "serialization")], ref_template="#/components/schemas/{model}")
    # Host and port only: the document is public, like /openapi.json, and a user name is nobody's business.
    servers = {_key(s): {"host": f"{s.host}:{s.port}", "protocol": _PROTOCOLS[s.kind]} for s in specs}
    channels = {_key(s): _channel(s) for s in specs}
    operations = {
        f"publish_{_key(s)}": {
            "action": "send",
            "channel": {"$ref": f"#/channels/{_key(s)}"},
            "messages": [{"$ref": f"#/channels/{_key(s)}/messages/jobEvent"}],
        }
        for s in specs
    }
    cloudevent = {
        "type": "object",
        "required": [
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "datacontenttype",
            "sequence",
            "provider",
            "data",
        ],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "description": "the event id"},
            "source": {"type": "string", "format": "uri"},
            "type": {"enum": ["job.succeeded", "job.failed", "job.cancelled"]},
            "subject": {"type": "string", "description": "the job id"},
            "time": {"type": ["string", "null"], "format": "date-time", "description": "the job's completed_at"},
            "datacontenttype": {"const": "application/json"},
            "sequence": {"type": "string", "description": "the event id, increasing"},
            "provider": {"type": "string"},
            "data": {"$ref": "#/components/schemas/JobOut"},
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "receiver events",
            "version": receiver.__version__,
            "description": "Every event of GET /v1/events, as a CloudEvents 1.0 message in structured JSON mode.",
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {**defs.get("$defs", {}), "CloudEvent": cloudevent},
            "messages": {
                "jobEvent": {
                    "name": "jobEvent",
                    "contentType": CONTENT_TYPE,
                    "payload": {"$ref": "#/components/schemas/CloudEvent"},
                }
            },
        },
    }


async def asyncapi_json(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    return JSONResponse(asyncapi_document(runtime.settings.sink_specs))
