"""Pure provider adapters: (headers, raw body) in, normalized Completions out; and the requests we send them
(`build_submit`/`parse_submit`, `build_poll`/`parse_poll`). No I/O here."""

from __future__ import annotations

from typing import Callable, Mapping

from receiver.models import Completion
from receiver.providers import apiframe, lumenfall, oxen, pixazo, runware

WebhookParser = Callable[[Mapping[str, str], bytes], list[Completion]]

WEBHOOK_PARSERS: dict[str, WebhookParser] = {
    "pixazo": pixazo.parse_webhook,
    "runware": runware.parse_webhook,
    "apiframe": apiframe.parse_webhook,
    "lumenfall": lumenfall.parse_webhook,
}

__all__ = ["WEBHOOK_PARSERS", "WebhookParser", "apiframe", "lumenfall", "oxen", "pixazo", "runware"]
