"""Fuzz the real `receiver serve` over HTTP and raw TCP with hypothesis-generated requests.

What must hold for every request: no 5xx (but a 502 `provider_refused` from `POST /v1/generations`, which
the README promises when the provider cannot be reached), no `/v1` success without the API token, the
answer the README promises for a webhook whose token, size and signature we know, JSON where JSON is
promised. What must hold at the end: the process is alive and healthy; the stored webhook receipts are
exactly those answered 2xx or 400, with the outcome the answer gave and the bytes that were sent (so every
authenticated webhook that got a 400 is an `invalid` receipt); the log is JSON lines with no ERROR and
no secret in it.
"""

from __future__ import annotations

import base64
import collections
import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import standardwebhooks
from hypothesis import HealthCheck, Phase, Verbosity, example, given, settings
from hypothesis import seed as hypothesis_seed

from receiver.providers import apiframe
from tests.faults.common import Report, log_records
from tests.faults.fuzz_cases import WEBHOOK_PROVIDERS, ApiCase, Case, RawCase, WebhookCase, cases
from tests.support import API_TOKEN, SIGNING_SECRET, WEBHOOK_TOKEN, ReceiverProcess, process_env

APIFRAME_KEY = "fuzz-apiframe-key-3c9e71"
LUMENFALL_SECRET = "whsec_" + base64.b64encode(b"fuzz-lumenfall-secret-0123456789").decode()
MAX_BODY = 16_384
SECRETS = (API_TOKEN, WEBHOOK_TOKEN, SIGNING_SECRET, APIFRAME_KEY, LUMENFALL_SECRET)


def _visible(text: str) -> bytes:
    """Only the bytes an HTTP field value may hold, so the request reaches the app at all."""
    return bytes(b for b in text.encode("utf-8") if 0x21 <= b <= 0x7E)


class Stop(Exception):
    """The receiver process died: nothing more to learn from this run."""


class Fuzzer:
    def __init__(self, daemon: ReceiverProcess, report: Report) -> None:
        self.daemon = daemon
        self.report = report
        self.client = httpx.Client(base_url=daemon.base_url, timeout=15)
        self.job_ids: list[str] = []
        self.ledger: dict[int, tuple[str, bytes]] = {}  # receipt id → (outcome answered, bytes sent)
        self.statuses: collections.Counter[str] = collections.Counter()
        self.raw_timeouts = 0
        self.sent = 0

    def problem(self, text: str) -> None:
        if len(self.report.problems) < 50:
            self.report.problems.append(text)

    def run(self, case: Case) -> None:
        if not self.daemon.alive:
            raise Stop
        self.sent += 1
        if isinstance(case, WebhookCase):
            self.webhook(case)
        elif isinstance(case, ApiCase):
            self.api(case)
        else:
            self.raw(case)

    # -- webhooks ----------------------------------------------------------------------------------

    def webhook(self, case: WebhookCase) -> None:
        token = quote(WEBHOOK_TOKEN, safe="")
        query = {
            "right": f"token={token}",
            "encoded": f"%74oken={token}",
            "missing": "",
            "empty": "token=",
            "wrong": f"token={quote(case.garbage or 'nope', safe='')}",
            "twice": f"token=nope&token={token}",
        }[case.token]
        url = f"/webhooks/{quote(case.provider, safe='')}" + (f"?{query}" if query else "")
        headers: dict[str, Any] = dict(case.headers)
        signed = self._sign(case, headers)
        content: Any = iter([case.body]) if case.chunked else case.body
        try:
            response = self.client.post(url, content=content, headers=_wire(headers))
        except httpx.LocalProtocolError:
            self.statuses["not sendable (client refused the headers)"] += 1
            return
        except httpx.HTTPError as exc:
            self.problem(f"webhook {case.provider!r}: {type(exc).__name__}: {exc}")
            return
        status = response.status_code
        self.statuses[f"webhook {status}"] += 1
        expected = self._expected(case, signed)
        where = f"POST {url[:80]} body {case.body[:80]!r}"
        if status >= 500:
            self.problem(f"{where} → {status}: {response.text[:200]}")
        if expected is not None and not _matches(status, expected):
            self.problem(f"{where} → {status}, the README says {expected}")
        if not (200 <= status < 300 or status in (400, 401, 413)):
            return  # a path no route matches (`/webhooks/..`) gets Starlette's plain 404
        try:
            answer = response.json()
        except ValueError:
            self.problem(f"{where} → {status} answer is not JSON: {response.text[:100]!r}")
            return
        if status in (401, 413):
            return
        receipt_id = answer.get("receipt_id")
        if not isinstance(receipt_id, int):
            self.problem(f"{where} → {status} without a receipt_id")
            return
        self.ledger[receipt_id] = ("invalid" if status == 400 else answer["outcome"], case.body)
        self.job_ids += answer.get("job_ids", [])

    def _sign(self, case: WebhookCase, headers: dict[str, Any]) -> bool:
        """Add the signature headers the case asks for; True if what was added is a valid signature."""
        if case.provider == "apiframe":
            if case.signature == "correct":
                headers["x-webhook-signature"] = apiframe.sign(APIFRAME_KEY, case.body)
                return True
            if case.signature == "garbage":
                headers["x-webhook-signature"] = _visible(case.garbage)
            return False
        if case.provider == "lumenfall":
            try:
                text = case.body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if case.signature == "correct" and text is not None:
                now = datetime.now(UTC)
                headers.update(
                    {
                        "webhook-id": f"msg_fuzz_{self.sent}",
                        "webhook-timestamp": str(int(now.timestamp())),
                        "webhook-signature": standardwebhooks.Webhook(LUMENFALL_SECRET).sign(
                            f"msg_fuzz_{self.sent}", now, text
                        ),
                    }
                )
                return True
            if case.signature == "garbage":
                headers["webhook-signature"] = _visible(case.garbage)
            return False
        return True

    @staticmethod
    def _expected(case: WebhookCase, signed: bool) -> str | int | None:
        if case.provider not in WEBHOOK_PROVIDERS:
            return 404
        if case.token == "twice":
            return None
        if case.token not in ("right", "encoded"):
            return 401
        if len(case.body) > MAX_BODY:
            return 413
        if not signed:
            return 401
        return "2xx or 400"

    # -- /v1 and ops -------------------------------------------------------------------------------

    def api(self, case: ApiCase) -> None:
        job = self.job_ids[case.job % len(self.job_ids)] if case.job is not None and self.job_ids else case.job_text
        path = case.path.replace("{job}", quote(job, safe=""))
        # A long-poll on a pending job would only make the run slow: hold it to 50 ms.
        query: list[tuple[str, str | int | float | bool | None]] = [
            (k, "0.05" if k == "wait" and _number(v) > 0.05 else v) for k, v in case.query
        ]
        headers: dict[str, Any] = dict(case.headers)
        auth = {
            "right": f"Bearer {API_TOKEN}",
            "lower-scheme": f"bearer {API_TOKEN}",
            "wrong": "Bearer nope",
            "basic": "Basic dXNlcjpwYXNz",
            "bearer-empty": "Bearer",
            "right-plus-junk": f"Bearer {API_TOKEN} x",
        }.get(case.auth)
        headers.pop("authorization", None)
        if auth is not None:
            headers["authorization"] = auth.encode()
        where = f"{case.method} {path[:80]} {query!r:.80} ({case.auth})"
        try:
            with self.client.stream(
                case.method, path, params=query, headers=_wire(headers), content=case.body
            ) as response:
                streaming = response.headers.get("content-type", "").startswith("text/event-stream")
                body = b"" if streaming or case.method == "HEAD" else response.read()
        except httpx.LocalProtocolError:
            self.statuses["not sendable (client refused the headers)"] += 1
            return
        except httpx.HTTPError as exc:
            self.problem(f"{where}: {type(exc).__name__}: {exc}")
            return
        status = response.status_code
        self.statuses[f"api {status}"] += 1
        refused = path == "/v1/generations" and status == 502 and b"provider_refused" in body
        if status >= 500 and not refused:
            self.problem(f"{where} body {case.body!r:.80} → {status}: {body[:200]!r}")
        if path.startswith("/v1") and 200 <= status < 300 and case.auth not in ("right", "lower-scheme"):
            self.problem(f"{where} → {status} without the API token")
        if body and response.headers.get("content-type", "").startswith("application/json"):
            try:
                answer = json.loads(body)
            except ValueError:
                self.problem(f"{where} → {status}: not JSON: {body[:100]!r}")
                return
            if path == "/v1/jobs" and case.method == "POST" and status in (200, 201):
                self.job_ids.append(answer["id"])

    # -- raw bytes ---------------------------------------------------------------------------------

    def raw(self, case: RawCase) -> None:
        data = b""
        try:
            with socket.create_connection(("127.0.0.1", self.daemon.port), timeout=2) as sock:
                try:
                    sock.sendall(case.data)
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # the server closed on us mid-send: it may
                while len(data) < 65536:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except TimeoutError:
            self.raw_timeouts += 1
        except OSError:
            pass
        for line in data.split(b"\r\n"):
            if line.startswith(b"HTTP/1.") and len(line) >= 12 and line[9:10] == b"5":
                self.problem(f"raw {case.data[:120]!r} → {line[:40]!r}")
        self.statuses["raw " + (data[9:12].decode("latin-1") if data.startswith(b"HTTP/1.") else "closed")] += 1

    # -- the end -----------------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        report = self.report
        report.check(self.daemon.alive, "the receiver process died")
        if not self.daemon.alive:
            return {}
        healthy = self.client.get("/healthz").status_code == 200
        report.check(healthy, "/healthz is not 200 after the run")
        stored: dict[int, dict[str, Any]] = {}
        cursor: str | None = None
        auth = {"authorization": f"Bearer {API_TOKEN}"}
        while True:
            page = self.client.get(
                "/v1/receipts", params={"limit": 500, **({"cursor": cursor} if cursor else {})}, headers=auth
            ).json()
            stored.update({r["id"]: r for r in page["receipts"] if r["source"] == "webhook"})
            cursor = page["next_cursor"]
            if not cursor:
                break
        report.check(
            set(stored) == set(self.ledger),
            f"{len(stored)} webhook receipts stored, {len(self.ledger)} answered 2xx/400; "
            f"unexpected {sorted(set(stored) - set(self.ledger))[:5]}, missing {sorted(set(self.ledger) - set(stored))[:5]}",
        )
        for receipt_id, (outcome, sent) in self.ledger.items():
            receipt = stored.get(receipt_id)
            if receipt is None:
                continue
            kept = base64.b64decode(receipt["body_base64"]) if "body_base64" in receipt else receipt["body"].encode()
            if receipt["outcome"] != outcome or kept != sent:
                self.problem(
                    f"receipt {receipt_id}: stored {receipt['outcome']} {kept[:60]!r}, "
                    f"answered {outcome} for {sent[:60]!r}"
                )
        outcomes = collections.Counter(outcome for outcome, _ in self.ledger.values())
        return {"stored webhook receipts": len(stored), **{f"  {k}": v for k, v in sorted(outcomes.items())}}


def _wire(headers: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """Headers as bytes, as they go on the wire (values may be str, from signing, or bytes, generated)."""
    return [
        (name.encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
        for name, value in headers.items()
    ]


def _matches(status: int, expected: str | int) -> bool:
    if expected == "2xx or 400":
        return 200 <= status < 300 or status == 400
    return status == expected


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if value == value else 0.0


def fuzz(workdir: Path, *, examples: int = 300, seed: int | None = None, derandomize: bool = False) -> Report:
    """Run `examples` generated requests (plus the explicit ones) against a fresh receiver process."""
    report = Report("fuzzing webhooks, /v1 and raw HTTP")
    started = time.monotonic()
    dead = socket.socket()  # bound, never listening: every call the receiver makes to it is refused
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    env = process_env(
        workdir,
        RECEIVER_LOG_FORMAT="json",
        RECEIVER_MAX_BODY_BYTES=str(MAX_BODY),
        RECEIVER_DEFAULT_CALLBACK_URL=f"{dead_url}/hook",
        RECEIVER_APIFRAME_API_KEY=APIFRAME_KEY,
        RECEIVER_LUMENFALL_WEBHOOK_SECRET=LUMENFALL_SECRET,
        RECEIVER_RETRY_SCHEDULE="1,1",
        **{f"RECEIVER_{p.upper()}_BASE_URL": dead_url for p in ("oxen", "runware", "pixazo", "apiframe", "lumenfall")},
    )
    daemon = ReceiverProcess(env, log_path=workdir / "receiver.log")
    daemon.start()
    fuzzer = Fuzzer(daemon, report)
    try:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=derandomize,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            print_blob=False,
        )
        @given(case=cases)
        @_known_cases
        def run(case: Case) -> None:
            fuzzer.run(case)

        if seed is not None and not derandomize:
            run = hypothesis_seed(seed)(run)
        try:
            run()
        except Stop:
            pass
        figures = fuzzer.finish()
    finally:
        fuzzer.client.close()
        daemon.stop()
        dead.close()
    records, other = log_records(daemon.log_path)
    text = daemon.log_path.read_text("utf-8", "replace")
    errors = [r for r in records if r.get("level") in ("ERROR", "CRITICAL")]
    report.check(not errors, f"{len(errors)} ERROR log record(s), first: {str(errors[:1])[:600]}")
    report.check(not other, f"{len(other)} log line(s) that are not JSON, first: {other[:1]}")
    leaked = [
        name
        for name, value in zip(
            ("API token", "webhook token", "signing secret", "Apiframe key", "Lumenfall secret"), SECRETS
        )
        if value in text
    ]
    report.check(not leaked, f"secrets in the log: {leaked}")
    report.figures = {
        "requests and connections": fuzzer.sent,
        **{k: v for k, v in sorted(fuzzer.statuses.items())},
        "raw connections that timed out": fuzzer.raw_timeouts,
        **figures,
        "log records": len(records),
        "requests per second": round(fuzzer.sent / max(1e-9, time.monotonic() - started), 1),
    }
    report.elapsed_s = time.monotonic() - started
    return report


# Inputs that once broke something (see docs/reliability.md): always run, before the generated ones.
_KNOWN: list[Case] = [
    WebhookCase("pixazo", "right", b"[" * 1000 + b"]" * 1000, "none"),
    WebhookCase("pixazo", "right", b'{"request_id": ' + b"9" * 5000 + b', "status": "FAILED"}', "none"),
    WebhookCase(
        "pixazo", "right", b'{"request_id": "ipv6", "status": "COMPLETED", "output": {"media_url": "http://["}}', "none"
    ),
    WebhookCase("pixazo", "encoded", b'{"request_id": "enc", "status": "FAILED"}', "none"),
    WebhookCase("runware", "right", b'{"data": [{"taskUUID": "t", "imageURL": "http://[::1"}]}', "none"),
    WebhookCase("pixazo", "right", b'{"request_id": "\\ud800", "status": "FAILED", "error": "\\udfff"}', "none"),
    ApiCase("POST", "/v1/jobs", None, "", [], "right", b'{"provider": "pixazo", "provider_job_id": "\\udfff"}'),
    ApiCase(
        "POST",
        "/v1/jobs",
        None,
        "",
        [],
        "right",
        b'{"provider": "pixazo", "provider_job_id": "nan", "metadata": {"a": NaN}}',
    ),
    ApiCase(
        "POST",
        "/v1/jobs",
        None,
        "",
        [],
        "right",
        b'{"provider": "pixazo", "provider_job_id": "deep", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ),
    ApiCase(
        "POST",
        "/v1/jobs",
        None,
        "",
        [],
        "right",
        b'{"provider": "pixazo", "provider_job_id": "wide", "expected_outputs": ' + b"1" * 5000 + b"}",
    ),
    ApiCase("GET", "/v1/jobs", None, "", [("cursor", "99999999999999999999999")], "right", None),
    ApiCase("GET", "/v1/receipts", None, "", [("cursor", "²")], "right", None),
]


def _known_cases(function: Any) -> Any:
    for case in reversed(_KNOWN):
        function = example(case=case)(function)
    return function
