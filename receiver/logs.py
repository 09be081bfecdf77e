"""Logging: plain text or one JSON object per line; secrets and tokens never reach a log line.

Masking works on the finished line, whatever wrote it (our code, uvicorn's access log, a traceback):
every secret in force (`protect`), and whatever follows `token=` (however percent-encoded), `Bearer `,
`whsec_` or the password of a URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from typing import Any
from urllib.parse import quote

from pythonjsonlogger.json import JsonFormatter

from receiver.settings import Secrets, Settings

MIN_SECRET_CHARS = 4  # shorter values would mask ordinary words, and are no secret anyway

_TOKEN_IN_QUERY = re.compile(
    r"((?:t|%[57]4)(?:o|%[46]f)(?:k|%[46]b)(?:e|%[46]5)(?:n|%[46]e)=)[^&\s\"\\]+", re.IGNORECASE
)
_BEARER = re.compile(r"(bearer\s+)[^\s\"\\,]+", re.IGNORECASE)
_WHSEC = re.compile(r"whsec_[A-Za-z0-9+/=_-]+")
_URL_PASSWORD = re.compile(r"(://[^:/@\s\"]+:)[^@/\s\"]+@")


class Masker:
    """Masks secrets in text: the values given (also URL- and JSON-escaped) and the patterns above."""

    def __init__(self, values: tuple[str | None, ...] = ()) -> None:
        self._secrets: set[str] = set()
        self._known: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: tuple[str | None, ...]) -> None:
        for value in values:
            if not value or len(value) < MIN_SECRET_CHARS:
                continue
            forms = {value, quote(value, safe=""), json.dumps(value)[1:-1]}
            if value.startswith("whsec_"):
                forms.add(value[len("whsec_") :])
            self._secrets |= {f for f in forms if len(f) >= MIN_SECRET_CHARS}
        if self._secrets:
            self._known = re.compile("|".join(re.escape(s) for s in sorted(self._secrets, key=len, reverse=True)))

    def redact(self, text: str) -> str:
        # Each pattern runs only on a line holding what it needs to match (a plain substring test costs a
        # tenth of a regex pass): most lines hold none of these, and logging is on every request's path.
        if self._known is not None:
            text = self._known.sub("***", text)
        lowered = text.lower()
        if "=" in text and ("token=" in lowered or "%" in text):
            text = _TOKEN_IN_QUERY.sub(r"\1***", text)
        if "bearer" in lowered:
            text = _BEARER.sub(r"\1***", text)
        if "whsec_" in text:
            text = _WHSEC.sub("whsec_***", text)
        if "@" in text and "://" in text:
            text = _URL_PASSWORD.sub(r"\1***@", text)
        return text


class Redacting(logging.Formatter):
    """Formats with `inner`, then masks secrets in the finished line."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner
        self.masker = Masker()

    def protect(self, values: tuple[str | None, ...]) -> None:
        self.masker.add(values)

    def redact(self, text: str) -> str:
        return self.masker.redact(text)

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.inner.format(record))


class AccessLines(logging.Filter):
    """Which of uvicorn's access lines are written (`RECEIVER_ACCESS_LOG`): `all`; `webhook-errors`, all but
    webhooks answered 2xx (the bulk of the traffic, each logged anyway as the job it finished); `errors`,
    only answers other than 2xx; `off`."""

    def __init__(self, policy: str) -> None:
        super().__init__()
        self.policy = policy
        # The raw paths (root path included, as uvicorn's line shows them) whose 2xx lines are dropped, by
        # their start: b"" for every path, None for none. The server makes no line for those (receiver.web.server).
        self.quiet_prefix = {"all": None, "webhook-errors": b"/webhooks/"}.get(policy, b"")

    def filter(self, record: logging.LogRecord) -> bool:
        return self.keeps(record.args)

    def keeps(self, args: object) -> bool:
        if self.policy == "all":
            return True
        if self.policy == "off":
            return False
        if not (isinstance(args, tuple) and len(args) == 5):
            return True  # not an access line as uvicorn writes them: keep it
        status, path = args[4], args[2]
        if not (isinstance(status, int) and 200 <= status < 300):
            return True
        return self.policy == "webhook-errors" and not str(path).startswith("/webhooks/")

    def drops_success(self, raw_path: bytes) -> bool:
        """Whether a 2xx answer to a request for this raw path is dropped (see `quiet_prefix`)."""
        return self.quiet_prefix is not None and raw_path.startswith(self.quiet_prefix)

    @staticmethod
    def installed_on(logger: logging.Logger) -> AccessLines | None:
        """The policy `install`ed on `logger`, if any."""
        return next((f for f in logger.filters if isinstance(f, AccessLines)), None)

    def install(self, logger: logging.Logger) -> None:
        """Filter `logger` (uvicorn's access logger), deciding before a record is made: uvicorn calls its
        `info` once per request, and a record made only to be dropped (every accepted webhook, by default)
        cost ~5 µs, a tenth of ingest's throughput once the rest got faster (docs/benchmarks.md)."""
        logger.filters[:] = [self]  # lines that reach the logger another way
        if self.policy == "all":
            return
        plain_info = logging.Logger.info.__get__(logger)

        def info(msg: object, *args: object, **kwargs: Any) -> None:
            # The level first (cached): at WARNING no line is written, whatever the policy says of it.
            if logger.isEnabledFor(logging.INFO) and self.keeps(args):
                plain_info(msg, *args, **kwargs)

        logger.info = info  # type: ignore[method-assign]


class TextLines(logging.Formatter):
    """`time level logger: message`, the time as logging writes it; its text is made once a second."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
        return f"{self._second_text},{int(record.msecs):03d}"


class JsonLines(JsonFormatter):
    """`{"time", "level", "logger", "message", …}`: extras such as `job_id` become fields, and uvicorn's
    access lines also carry `client`, `method`, `path` and `status`."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _version, status = record.args
            log_data.update(client=client, method=method, path=path, status=status)
        time = log_data.pop("time", None)
        if time is not None:  # first, for people reading the lines
            fields = dict(log_data)
            log_data.clear()
            log_data.update(time=time, **fields)


class FinishedLines:
    """The `job … finished` lines, one per burst: messages committed together resume together (in one
    turn of the event loop), so their jobs share one line, written at the end of that turn. A busy
    receiver thus writes a line per group commit rather than per webhook; a quiet one, a line per job."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._pending: list[tuple[str, str]] = []  # (job id, "pixazo webhook")

    def add(self, job_ids: list[str], how: str) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.write)
        self._pending.extend((job_id, how) for job_id in job_ids)

    def write(self) -> None:
        done, self._pending = self._pending, []
        if len(done) == 1:
            ((job_id, how),) = done
            self.log.info("job %s finished (%s)", job_id, how, extra={"job_id": job_id})
        elif done:
            self.log.info(
                "%d jobs finished: %s",
                len(done),
                ", ".join(f"{job_id} ({how})" for job_id, how in done),
                extra={"job_ids": [job_id for job_id, _ in done]},
            )


def configure(*, fmt: str = "text", level: str = "INFO", access_log: str = "all") -> dict[str, Any]:
    """Set up the root logger and return a uvicorn `log_config` that uses the same handler; `access_log`
    picks uvicorn's access lines (see `AccessLines`)."""
    handler = logging.StreamHandler(sys.stderr)
    inner = JsonLines() if fmt == "json" else TextLines()
    handler.setFormatter(Redacting(inner))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    AccessLines(access_log).install(logging.getLogger("uvicorn.access"))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # asyncpg's pool warns at each retry of its connection floor while the database is away; the workers'
    # outage lines (receiver.outage) say it once.
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
    # No format here shows threads, processes or source lines: not looking them up for every record (the
    # logging HOWTO's "Optimization") saves a third of what a record costs.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    return {"version": 1, "disable_existing_loggers": False}


def protect(*values: str | None) -> None:
    """Mask these values in every line the root logger's handlers write from now on."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, Redacting):
            handler.formatter.protect(values)


def secrets_in_force(settings: Settings, secrets: Secrets) -> tuple[str, ...]:
    """The three of `secrets`, and every provider secret set (API keys, Lumenfall's webhook secret, …)."""
    return (
        secrets.api_token,
        secrets.webhook_token,
        secrets.signing_secret,
        *(k.get_secret_value() for k in settings.provider_secrets()),
    )


def protect_secrets(settings: Settings, secrets: Secrets) -> None:
    """Mask every secret in force in the log lines from now on."""
    protect(*secrets_in_force(settings, secrets))


def masker_for(settings: Settings, secrets: Secrets) -> Masker:
    """Masks every secret in force, as log lines are: for provider text the receiver repeats (a 502)."""
    return Masker(secrets_in_force(settings, secrets))
