"""Refused inbound requests as both stores keep them: the newest REFUSALS_KEPT, trimmed after each batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from receiver.models import body_fields, dumps, iso_time

REFUSALS_KEPT = 10_000
REFUSAL_COLUMNS = (
    "id, provider, reason, status, detail, method, path, query, headers, body, body_bytes, receipt_id, received_at"
)
REFUSAL_INSERT_COLUMNS = (
    "provider, reason, status, detail, method, path, query, headers, body, body_bytes, receipt_id, received_at"
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused request, credentials already masked; `body` is its first bytes, `body_bytes` all it declared
    or sent; `receipt_id` links an invalid body to the receipt that keeps it whole."""

    provider: str
    reason: str
    status: int
    detail: str | None
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    body_bytes: int
    received_at: float
    receipt_id: int | None = None
    id: int = 0

    def row(self) -> tuple[Any, ...]:
        return (
            self.provider,
            self.reason,
            self.status,
            self.detail,
            self.method,
            self.path,
            self.query,
            dumps(self.headers),
            self.body,
            self.body_bytes,
            self.receipt_id,
            self.received_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "reason": self.reason,
            "status": self.status,
            "detail": self.detail,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            **body_fields(self.body),
            "body_bytes": self.body_bytes,
            "body_truncated": len(self.body) < self.body_bytes,
            "receipt_id": self.receipt_id,
            "received_at": iso_time(self.received_at),
        }


def refusal_from_row(r: Any) -> Refusal:
    return Refusal(
        id=int(r["id"]),
        provider=r["provider"],
        reason=r["reason"],
        status=int(r["status"]),
        detail=r["detail"],
        method=r["method"],
        path=r["path"],
        query=r["query"],
        headers=orjson.loads(r["headers"]),
        body=bytes(r["body"]),
        body_bytes=int(r["body_bytes"]),
        receipt_id=r["receipt_id"],
        received_at=float(r["received_at"]),
    )


def refusal_where(provider: str | None, reason: str | None, mark: str) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("provider", provider), ("reason", reason)):
        if value is not None:
            params.append(value)
            where.append(f"{column} = {mark if mark == '?' else f'${len(params)}'}")
    return where, params
