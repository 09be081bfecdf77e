"""`Idempotency-Key` on `POST /v1/generations`: a repeat within IDEMPOTENCY_TTL_S (receiver.models) answers the
same jobs, unsubmitted.

A key is claimed in the store before anything is submitted (a placeholder row: of two requests with
one key, exactly one submits), then finished with the jobs' ids, or released when the provider refuses.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from starlette.requests import Request

from receiver.models import IDEMPOTENCY_KEY_MAX_LENGTH, IDEMPOTENCY_TTL_S, dumps
from receiver.runtime import Runtime
from receiver.store import KeyClaim
from receiver.web.validation import invalid

WAIT_STEP_S = 0.05


def idempotency_key(request: Request) -> str | None:
    """The caller's Idempotency-Key, if any: 1 to IDEMPOTENCY_KEY_MAX_LENGTH printable ASCII characters."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not (key.isascii() and key.isprintable()) or not 0 < len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        raise invalid("Idempotency-Key", f"must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters")
    return key


def fingerprint(request_json: object) -> str:
    """What a repeat must match: the validated request, canonically serialized."""
    return hashlib.sha256(dumps(request_json).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Settled:
    """The key's state once no other request is submitting under it."""

    claim: KeyClaim
    ours: bool  # True: this request holds the claim and must submit, then finish or release it


async def settle(runtime: Runtime, key: str, digest: str) -> Settled:
    """Claim `key`; while another request holds an unfinished claim, wait for it (up to its staleness)."""
    stale_s = runtime.settings.provider_timeout_s * 2 + 30
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stale_s
    while True:
        claim = await runtime.store.claim_idempotency_key(
            key, fingerprint=digest, ttl_s=IDEMPOTENCY_TTL_S, stale_s=stale_s
        )
        if claim.state != "pending" or loop.time() > deadline or runtime.stopping.is_set():
            return Settled(claim, claim.state == "new")
        await asyncio.sleep(WAIT_STEP_S)
