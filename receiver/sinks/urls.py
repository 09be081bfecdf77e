"""`RECEIVER_SINKS`: each broker URL parsed and checked once, at start (a bad one stops `serve`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

Kind = Literal["nats", "redis", "amqp"]

# A NATS subject token or stream name: no spaces, wildcards or separators that would change its meaning.
_NATS_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")
_OPTIONS: dict[str, frozenset[str]] = {
    "nats": frozenset({"stream"}),
    "redis": frozenset({"stream", "maxlen"}),
    "amqp": frozenset({"exchange"}),
}
_DEFAULT_PORTS = {"nats": 4222, "redis": 6379, "amqp": 5672}


@dataclass(frozen=True, slots=True)
class SinkSpec:
    """One configured sink. `url` holds the credentials (for connecting only); `shown` hides the password."""

    kind: Kind
    url: str = field(repr=False)  # never printed: it may hold a password
    shown: str
    host: str
    port: int
    target: str  # NATS stream, Redis stream key or AMQP exchange
    prefix: str = ""  # NATS subject prefix
    db: int = 0  # Redis database
    maxlen: int = 0  # Redis: trim approximately to this many entries (0: never)
    vhost: str = "/"  # AMQP virtual host

    @property
    def server_url(self) -> str:
        """The URL without our options (the client libraries read a query as their own arguments)."""
        parts = urlsplit(self.url)
        path = f"/{self.db}" if self.kind == "redis" else ("" if self.kind == "nats" else parts.path)
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.target}"


def hide_password(raw: str) -> str:
    """`raw` with its credentials replaced by `***` (for messages, listings and logs): a password, and a
    user part without one too (NATS reads `nats://TOKEN@host` as a token). A URL that does not parse
    as one is shown as its scheme only: its credentials could be anywhere in it."""
    try:
        parts = urlsplit(raw)
        _ = parts.port  # a bad port is a URL that did not parse
    except ValueError:
        return _scheme_only(raw)
    if "@" not in parts.netloc:
        return raw if "@" not in raw else _scheme_only(raw)
    userinfo, _, host = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    hidden = f"{user}:***" if has_password else "***"
    return urlunsplit(parts._replace(netloc=f"{hidden}@{host}"))


def _scheme_only(raw: str) -> str:
    scheme = raw.partition("://")[0]
    return f"{scheme}://***" if scheme.isalnum() else "***"


def credentials(raw: str) -> tuple[str, ...]:
    """The secrets written in a sink URL (a password, or a NATS token in the user part), as written and
    decoded: whatever a client library might repeat in an error."""
    try:
        parts = urlsplit(raw)
    except ValueError:
        return ()
    found = [parts.password] if parts.password else []
    if parts.username and (parts.password is None or parts.scheme == "nats"):
        found.append(parts.username)
    return tuple(s for secret in found if secret for s in {secret, unquote(secret)})


def parse_sink_url(raw: str) -> SinkSpec:
    """One sink URL; ValueError naming it (password hidden) and what is wrong."""
    shown = hide_password(raw)

    def bad(why: str) -> ValueError:
        return ValueError(f"sink {shown!r}: {why}")

    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise bad("not a URL (a password with '/', '#' or '?' in it must be percent-encoded)") from None
    kind = parts.scheme.lower()
    if kind not in _OPTIONS:
        raise bad("unknown scheme (use nats://, redis:// or amqp://)")
    if not parts.hostname:
        raise bad("no host")
    if parts.fragment:
        raise bad("a #fragment means nothing here")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise bad("unreadable query") from None
    options = dict(query)
    if len(options) != len(query):
        raise bad("an option is given twice")
    unknown = sorted(set(options) - _OPTIONS[kind])
    if unknown:
        raise bad(f"unknown option {unknown[0]!r} (known: {', '.join(sorted(_OPTIONS[kind]))})")
    common = dict(kind=kind, url=raw, shown=shown, host=parts.hostname, port=port or _DEFAULT_PORTS[kind])
    path = unquote(parts.path.lstrip("/"))
    if kind == "nats":
        prefix = path or "receiver"
        if not all(_NATS_TOKEN.match(token) for token in prefix.split(".")):
            raise bad(f"subject prefix {prefix!r} must be dot-separated tokens of letters, digits, '-' and '_'")
        stream = options.get("stream", "RECEIVER")
        if not _NATS_TOKEN.match(stream):
            raise bad(f"stream {stream!r} must be letters, digits, '-' and '_'")
        return SinkSpec(**common, target=stream, prefix=prefix)  # type: ignore[arg-type]
    if kind == "redis":
        if path and not path.isdigit():
            raise bad(f"database {path!r} must be a number")
        stream = options.get("stream", "receiver:events")
        if not stream or len(stream) > 512:
            raise bad("stream must be 1 to 512 characters")
        maxlen_raw = options.get("maxlen", "0")
        if not maxlen_raw.isdigit():
            raise bad(f"maxlen {maxlen_raw!r} must be a whole number >= 0")
        return SinkSpec(**common, target=stream, db=int(path or 0), maxlen=int(maxlen_raw))  # type: ignore[arg-type]
    exchange = options.get("exchange", "receiver")
    if not exchange or len(exchange) > 255 or exchange.startswith("amq."):
        raise bad("exchange must be 1 to 255 characters and not start with 'amq.' (reserved)")
    return SinkSpec(**common, target=exchange, vhost=path or "/")  # type: ignore[arg-type]


def parse_sinks(value: str) -> tuple[SinkSpec, ...]:
    """The comma-separated list; ValueError for a bad URL or two sinks of the same name."""
    specs = tuple(parse_sink_url(part.strip()) for part in value.split(",") if part.strip())
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"two sinks are named {spec.name!r}: give each its own stream or exchange")
        seen.add(spec.name)
    return specs
