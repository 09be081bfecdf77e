"""What of a request may be kept and shown: every credential and signature masked, sizes bounded."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode

MASK = "***"
# Header values never kept: credentials and signatures (a signature is proof made with a secret).
MASKED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "webhook-signature",
        "x-webhook-signature",
        "x-api-key",
        "api-key",
    }
)
# Any other header whose name says it carries a credential is masked too (X-Auth-Token, X-Session-Key…).
CREDENTIAL_WORDS = ("auth", "token", "key", "secret", "session", "cookie", "signature", "password")
MASKED_PARAMS = frozenset({"token"})
MAX_HEADERS = 64
MAX_HEADER_CHARS = 1024


def masked_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """What arrived as headers, bounded, with the value of every credential header replaced by `***`."""
    kept: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()[:MAX_HEADER_CHARS]
        if len(kept) >= MAX_HEADERS and key not in kept:
            break
        text = MASK if is_credential(key) else value.decode("latin-1")[:MAX_HEADER_CHARS]
        # a header repeated many times stays one bounded value
        kept[key] = f"{kept[key]}, {text}"[:MAX_HEADER_CHARS] if key in kept else text
    return kept


def is_credential(header: str) -> bool:
    """Whether a (lower-case) header name carries a credential or a signature, by list or by its words."""
    return header in MASKED_HEADERS or any(word in header for word in CREDENTIAL_WORDS)


def masked_query(query_string: bytes) -> str:
    """The query as it arrived, each `token` value replaced by `***` (its presence still shows)."""
    pairs = parse_qsl(query_string.decode("latin-1")[:4096], keep_blank_values=True)
    return urlencode([(k, MASK if k in MASKED_PARAMS else v) for k, v in pairs], safe="*")
