"""Structured logs: one JSON object per line, the job id where there is one, never a secret."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import httpx

from receiver.logs import AccessLines, FinishedLines, JsonLines, Redacting
from receiver.providers import REGISTRY, apiframe
from tests.fakes.callback import callback_server
from tests.fakes.pixazo import completed
from tests.faults.common import log_records
from tests.support import ReceiverProcess, free_port, process_env

API_TOKEN = "api-Tok3n-6d1f0a9b27c84e55"
WEBHOOK_TOKEN = "hook-Tok3n-90b1c7e4aa2f"
SIGNING_SECRET = "whsec_" + base64.b64encode(b"signing-secret-for-the-log-test!").decode()
PROVIDER_KEYS = {p: f"{p}-KEY-{n}c0ffee{n}" for n, p in enumerate(REGISTRY)}
LUMENFALL_SECRET = "whsec_" + base64.b64encode(b"lumenfall-webhook-secret-0123456").decode()
SECRETS = [
    API_TOKEN,
    WEBHOOK_TOKEN,
    SIGNING_SECRET,
    SIGNING_SECRET.removeprefix("whsec_"),
    LUMENFALL_SECRET,
    *PROVIDER_KEYS.values(),
]


def _record(msg: str, *args: Any, exc: BaseException | None = None, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(
        "t", logging.WARNING, __file__, 1, msg, args, (type(exc), exc, exc.__traceback__) if exc else None
    )
    record.__dict__.update(extra)
    return record


def test_redaction_masks_known_secrets_and_token_shapes_in_any_part_of_a_line() -> None:
    for inner in (logging.Formatter("%(message)s"), JsonLines()):
        formatter = Redacting(inner)
        formatter.protect((API_TOKEN, SIGNING_SECRET, 'quo"te\\secret', "abc", None))
        try:
            raise RuntimeError(f"boom with {API_TOKEN}")
        except RuntimeError as exc:
            error = exc
        lines = [
            formatter.format(_record("GET %s", f"/v1/jobs?x={API_TOKEN}")),
            formatter.format(_record("POST /webhooks/pixazo?%74oken=unknown-to-us&x=1")),
            formatter.format(_record("POST /webhooks/pixazo?t%6Fken=unknown-too")),
            formatter.format(_record("header Authorization: Bearer some-other-token")),
            formatter.format(_record("secret %s and its body %s", SIGNING_SECRET, SIGNING_SECRET[6:])),
            formatter.format(_record('a stranger whsec_AAAABBBBCCCC and quo"te\\secret')),
            formatter.format(_record("store postgresql://user:hunter2@db/x")),
            formatter.format(_record("failed", exc=error, job_id="job_1", detail=API_TOKEN)),
        ]
        text = "\n".join(lines)
        for secret in (
            API_TOKEN,
            SIGNING_SECRET,
            SIGNING_SECRET[6:],
            "unknown-to-us",
            "unknown-too",
            "some-other-token",
            "AAAABBBBCCCC",
            "hunter2",
            'quo"te',
            'quo\\"te',
        ):
            assert secret not in text, (secret, text)
        assert "%74oken=***&x=1" in text and "Bearer ***" in text and "user:***@db" in text
        assert "abc" not in API_TOKEN and "abc" in formatter.format(_record("abc"))  # too short to be a secret
    json_line = json.loads(Redacting(JsonLines()).format(_record("done", job_id="job_7")))
    assert list(json_line)[:4] == ["time", "level", "logger", "message"] and json_line["job_id"] == "job_7"


async def test_serve_writes_json_lines_with_job_ids_and_no_secret(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with callback_server() as sink:
        env = process_env(
            tmp_path,
            RECEIVER_LOG_FORMAT="json",
            RECEIVER_API_TOKEN=API_TOKEN,
            RECEIVER_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
            RECEIVER_SIGNING_SECRET=SIGNING_SECRET,
            RECEIVER_LUMENFALL_WEBHOOK_SECRET=LUMENFALL_SECRET,
            RECEIVER_DEFAULT_CALLBACK_URL=sink.url("/ok"),
            RECEIVER_RETRY_SCHEDULE="0.05,0.05",
            RECEIVER_RECONCILE_AFTER_S="0.2",
            RECEIVER_ACCESS_LOG="all",
            **{f"RECEIVER_{p.upper()}_API_KEY": key for p, key in PROVIDER_KEYS.items()},
            **{f"RECEIVER_{p.upper()}_BASE_URL": dead for p in PROVIDER_KEYS},
        )
        daemon = ReceiverProcess(env, log_path=tmp_path / "receiver.log")
        await asyncio.to_thread(daemon.start)
        try:
            api_headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with httpx.AsyncClient(base_url=daemon.base_url, timeout=10) as client:

                async def hook(
                    provider: str, body: bytes, query: str = f"token={WEBHOOK_TOKEN}", **headers: str
                ) -> int:
                    return (
                        await client.post(f"/webhooks/{provider}?{query}", content=body, headers=headers)
                    ).status_code

                done = json.dumps(completed("lg_1")).encode()
                assert await hook("pixazo", done) == 200  # delivered to the sink
                assert await hook("pixazo", json.dumps(completed("lg_2")).encode(), f"%74oken={WEBHOOK_TOKEN}") == 200
                assert await hook("pixazo", b"{broken") == 400
                assert await hook("pixazo", done, "token=wrong") == 401
                assert (
                    await hook(
                        "apiframe", b'{"jobId": "a", "event": "completed"}', **{"x-webhook-signature": "sha256=00"}
                    )
                    == 401
                )
                signed = b'{"jobId": "lg_af", "event": "failed", "error": "nsfw"}'
                assert (
                    await hook(
                        "apiframe", signed, **{"x-webhook-signature": apiframe.sign(PROVIDER_KEYS["apiframe"], signed)}
                    )
                    == 200
                )
                assert (await client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"})).status_code == 401
                # An unknown query parameter is a 422; the token in it must still be masked.
                assert (await client.get(f"/v1/jobs?token={API_TOKEN}", headers=api_headers)).status_code == 422
                # A job whose callback URL refuses: attempt, retry, fails.
                failing = (
                    await client.post(
                        "/v1/jobs",
                        headers=api_headers,
                        json={
                            "provider": "pixazo",
                            "provider_job_id": "lg_3",
                            "callback_url": f"{dead}/x?sig={API_TOKEN}",
                        },
                    )
                ).json()
                assert await hook("pixazo", json.dumps(completed("lg_3")).encode()) == 200
                # A pending job the reconciler polls at a provider that cannot be reached.
                pending = (
                    await client.post(
                        "/v1/jobs", headers=api_headers, json={"provider": "runware", "provider_job_id": "lg_4"}
                    )
                ).json()
                # A submit the provider cannot take (connection refused): 502.
                refused = await client.post(
                    "/v1/generations", headers=api_headers, json={"provider": "pixazo", "prompt": "a fox"}
                )
                assert refused.status_code == 502

                def logged(predicate: Any) -> bool:
                    return any(predicate(r) for r in log_records(daemon.output())[0])

                deadline = asyncio.get_running_loop().time() + 10
                wanted = {
                    "the failed delivery": lambda r: (
                        r.get("job_id") == failing["id"] and re.search(r"attempt \d+ failed", r["message"])
                    ),
                    "the reconcile poll": lambda r: (
                        r["logger"] == "receiver.ingest.reconciler" and r.get("job_id") == pending["id"]
                    ),
                    "a delivery": lambda r: r["logger"] == "receiver.delivery.worker" and "delivered" in r["message"],
                }
                while not all(logged(p) for p in wanted.values()):
                    assert asyncio.get_running_loop().time() < deadline, [w for w, p in wanted.items() if not logged(p)]
                    await asyncio.sleep(0.05)
        finally:
            await asyncio.to_thread(daemon.stop)  # SIGTERM: uvicorn shuts down, then re-raises the signal
    text = daemon.output()
    records, other = log_records(daemon.output())
    assert not other, other[:3]  # every line is one JSON object
    for secret in SECRETS:
        assert secret not in text, f"a secret is in the log: {secret[:6]}…"
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert {(r["method"], r["status"]) for r in access} >= {("POST", 200), ("POST", 400), ("POST", 401), ("GET", 401)}
    webhook_paths = [r["path"] for r in access if r["path"].startswith("/webhooks/")]
    assert "/webhooks/pixazo?token=***" in webhook_paths and "/webhooks/pixazo?%74oken=***" in webhook_paths
    by_logger = {r["logger"] for r in records if r.get("job_id", "").startswith("job_")}
    assert {"receiver.ingest.inbound", "receiver.delivery.worker", "receiver.ingest.reconciler"} <= by_logger
    assert any(r["logger"] == "uvicorn.error" and "shutdown complete" in r["message"] for r in records)


def _access(path: str, status: int) -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", path, "1.1", status),
        None,
    )


def test_access_lines_by_policy() -> None:
    hook_ok, hook_bad = _access("/webhooks/pixazo?token=x", 200), _access("/webhooks/pixazo?token=x", 401)
    api_ok, api_bad = _access("/v1/jobs", 201), _access("/v1/jobs", 422)
    other = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "something else", None, None)
    expected = {
        "all": [True, True, True, True, True],
        "webhook-errors": [False, True, True, True, True],
        "errors": [False, True, False, True, True],
        "off": [False, False, False, False, False],
    }
    for policy, kept in expected.items():
        assert [AccessLines(policy).filter(r) for r in (hook_ok, hook_bad, api_ok, api_bad, other)] == kept, policy


def test_drops_success_says_what_the_policy_does_with_a_2xx_line() -> None:
    """The server skips uvicorn's line when `drops_success`: exactly when the policy would drop it anyway."""
    paths = [b"/webhooks/pixazo", b"/webhooks/", b"/webhooks", b"/webhooksx/a", b"/%77ebhooks/a", b"/v1/jobs", b"/"]
    paths += [b"/root/webhooks/pixazo", b'/webhooks/"x']
    for policy in ("all", "webhook-errors", "errors", "off"):
        lines = AccessLines(policy)
        for raw in paths:
            line = ("127.0.0.1:5000", "POST", raw.decode("latin-1").replace('"', "%22") + "?token=x", "1.1", 200)
            assert lines.drops_success(raw) is not lines.keeps(line), (policy, raw)


def test_the_installed_policy_is_found_on_its_logger() -> None:
    logger = logging.Logger("uvicorn.access.test")
    assert AccessLines.installed_on(logger) is None
    lines = AccessLines("errors")
    lines.install(logger)
    assert AccessLines.installed_on(logger) is lines


def test_a_dropped_access_line_is_never_made_into_a_record() -> None:
    """The policy is asked before `info` makes a record (uvicorn calls it once per request)."""
    logger = logging.Logger("uvicorn.access.test", logging.INFO)
    made: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            made.append(record)

    logger.addHandler(Collect())
    AccessLines("webhook-errors").install(logger)
    fmt = '%s - "%s %s HTTP/%s" %d'
    factory = logging.getLogRecordFactory()
    records: list[logging.LogRecord] = []

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        records.append(record)
        return record

    logging.setLogRecordFactory(counting)
    try:
        logger.info(fmt, "127.0.0.1:5000", "POST", "/webhooks/pixazo?token=x", "1.1", 200)
        assert records == [] and made == []
        logger.info(fmt, "127.0.0.1:5000", "POST", "/webhooks/pixazo?token=x", "1.1", 401)
        logger.info(fmt, "127.0.0.1:5000", "GET", "/v1/jobs", "1.1", 200)
        logger.log(logging.INFO, fmt, "127.0.0.1:5000", "POST", "/webhooks/pixazo", "1.1", 200)  # the filter's
    finally:
        logging.setLogRecordFactory(factory)
    assert [r.args[2:] for r in made] == [("/webhooks/pixazo?token=x", "1.1", 401), ("/v1/jobs", "1.1", 200)]  # type: ignore[index]


def test_redaction_skips_no_pattern_a_line_could_need() -> None:
    formatter = Redacting(logging.Formatter("%(message)s"))
    formatter.protect((API_TOKEN,))
    cases = {
        "job job_1 finished (pixazo webhook)": "job job_1 finished (pixazo webhook)",
        f"GET /x?TOKEN={WEBHOOK_TOKEN}&a=1": "GET /x?TOKEN=***&a=1",
        "GET /x?%54oken=abc": "GET /x?%54oken=***",
        "authorization: BEARER abc.def": "authorization: BEARER ***",
        "whsec_abcdef": "whsec_***",
        "https://u:pw@host/": "https://u:***@host/",
        f"{API_TOKEN[:5]}…{API_TOKEN}": f"{API_TOKEN[:5]}…***",
    }
    for line, masked in cases.items():
        assert formatter.format(_record(line)) == masked, line


async def test_default_access_log_leaves_out_accepted_webhooks_only(tmp_path: Path) -> None:
    env = process_env(
        tmp_path,
        RECEIVER_API_TOKEN=API_TOKEN,
        RECEIVER_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        RECEIVER_SIGNING_SECRET=SIGNING_SECRET,
    )
    daemon = ReceiverProcess(env, log_path=tmp_path / "receiver.log")
    daemon.env.pop("RECEIVER_ACCESS_LOG", None)  # the default, whatever the shell running the tests says
    await asyncio.to_thread(daemon.start)
    try:
        async with httpx.AsyncClient(base_url=daemon.base_url, timeout=10) as client:
            body = json.dumps(completed("quiet_1")).encode()
            assert (await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=body)).status_code == 200
            assert (await client.post("/webhooks/pixazo?token=wrong-token", content=body)).status_code == 401
            assert (await client.get("/v1/jobs", headers={"Authorization": f"Bearer {API_TOKEN}"})).status_code == 200
            deadline = asyncio.get_running_loop().time() + 10
            while '"GET /v1/jobs' not in daemon.output():
                assert asyncio.get_running_loop().time() < deadline, daemon.output()
                await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(daemon.stop)
    text = daemon.output()
    access = [line for line in text.splitlines() if "uvicorn.access" in line]
    assert [line for line in access if "/webhooks/" in line] == [
        next(line for line in access if '"POST /webhooks/pixazo?token=*** HTTP/1.1" 401' in line)
    ]
    assert any('"GET /v1/jobs HTTP/1.1" 200' in line for line in access)
    assert "receiver.ingest.inbound" in text and "finished (pixazo webhook)" in text  # the accepted webhook, as its job
    for secret in (API_TOKEN, WEBHOOK_TOKEN, "wrong-token", SIGNING_SECRET):
        assert secret not in text


async def test_jobs_finished_in_one_turn_of_the_loop_share_one_line(caplog: Any) -> None:
    lines = FinishedLines(logging.getLogger("receiver.ingest.inbound"))
    with caplog.at_level(logging.INFO, logger="receiver.ingest.inbound"):
        lines.add(["job_a"], "pixazo webhook")
        lines.add(["job_b", "job_c"], "oxen stream")
        assert caplog.records == []  # written at the end of the turn, once
        await asyncio.sleep(0)
        lines.add(["job_d"], "runware webhook")
        await asyncio.sleep(0)
    assert [r.getMessage() for r in caplog.records] == [
        "3 jobs finished: job_a (pixazo webhook), job_b (oxen stream), job_c (oxen stream)",
        "job job_d finished (runware webhook)",
    ]
    assert caplog.records[0].job_ids == ["job_a", "job_b", "job_c"] and caplog.records[1].job_id == "job_d"
