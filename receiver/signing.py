"""Standard Webhooks signing, shared by the callback worker and `receiver listen` (which imports no server module)."""

from __future__ import annotations

import base64
import math
import secrets
from datetime import datetime

import standardwebhooks


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signature_headers(webhook: standardwebhooks.Webhook, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (the timestamp is fresh, the id is not)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": webhook.sign(message_id, at, body.decode("utf-8")),
        "content-type": "application/json",
    }
