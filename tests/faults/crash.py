"""SIGKILL the real `receiver serve` at random moments under webhook load, restart it on the same SQLite file.

Afterwards every webhook that got a 2xx must be a job in the store, and its callback must arrive at the
default callback URL. Senders behave like providers: a webhook without a 2xx is sent again until one comes,
so a webhook committed just before the kill (its answer lost) comes back and must change nothing.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import random
import time
from pathlib import Path

import httpx
import standardwebhooks

from tests.fakes.callback import CallbackServer, callback_server
from tests.fakes.pixazo import completed
from tests.faults.common import (
    Report,
    all_pages,
    api_client,
    eventually,
    hook_path,
    log_records,
    retry_schedule,
)
from tests.support import SIGNING_SECRET, ReceiverProcess, process_env

GIVE_UP_S = 60.0  # a sender retrying one webhook this long means the receiver never came back


class WebhookLoad:
    """`senders` concurrent providers, each posting unique Pixazo completions one after another."""

    def __init__(self, base_url: str, senders: int, prefix: str) -> None:
        self.base_url = base_url
        self.senders = senders
        self.prefix = prefix
        self.ids = itertools.count(1)
        self.acked: dict[str, int] = {}  # provider job id → attempts it took
        self.given_up: list[str] = []
        self.attempts = 0
        self.refused = 0  # connection refused: the receiver was down
        self.cut = 0  # sent, but the connection died before an answer: maybe stored, maybe not
        self.statuses: collections.Counter[int] = collections.Counter()  # non-2xx answers
        self.in_flight = 0
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sender()) for _ in range(self.senders)]

    async def stop(self) -> None:
        """Let each sender finish the webhook it is on (until acknowledged), then end."""
        self._stopping = True
        await asyncio.gather(*self._tasks)

    async def _sender(self) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10, limits=limits) as client:
            while not self._stopping:
                await self._deliver(client, f"{self.prefix}_{next(self.ids)}")

    async def _deliver(self, client: httpx.AsyncClient, request_id: str) -> None:
        body = json.dumps(completed(request_id)).encode()
        started = time.monotonic()
        for attempt in itertools.count(1):
            self.attempts += 1
            self.in_flight += 1
            try:
                response = await client.post(hook_path("pixazo"), content=body)
            except httpx.ConnectError:
                self.refused += 1
            except httpx.HTTPError:
                self.cut += 1
            else:
                if response.is_success:
                    self.acked[request_id] = attempt
                    return
                self.statuses[response.status_code] += 1
            finally:
                self.in_flight -= 1
            if time.monotonic() - started > GIVE_UP_S:
                self.given_up.append(request_id)
                return
            await asyncio.sleep(0.02)


def callbacks_by_job(sink: CallbackServer, report: Report) -> dict[str, list[str]]:
    """provider job id → the webhook-ids of every callback that arrived for it; bad signatures are problems."""
    verifier = standardwebhooks.Webhook(SIGNING_SECRET)
    by_job: dict[str, list[str]] = collections.defaultdict(list)
    bad = 0
    for request in list(sink.requests):
        try:
            verifier.verify(request.body, request.headers)
        except Exception:
            bad += 1
        body = json.loads(request.body)
        by_job[body["data"]["provider_job_id"]].append(request.webhook_id)
    report.check(bad == 0, f"{bad} callback(s) with a bad signature")
    return by_job


async def sigkill_under_load(
    workdir: Path,
    *,
    kills: int = 20,
    senders: int = 16,
    uptime_s: tuple[float, float] = (0.3, 1.5),
    settle_s: float = 60.0,
    seed: int | None = None,
) -> Report:
    rand = random.Random(seed)
    report = Report("SIGKILL under webhook load")
    started = time.monotonic()
    async with callback_server() as sink:
        env = process_env(
            workdir,
            RECEIVER_DEFAULT_CALLBACK_URL=sink.url("/hook"),
            RECEIVER_LOG_FORMAT="json",
            RECEIVER_LOG_LEVEL="WARNING",
            RECEIVER_CALLBACK_TIMEOUT_S="5",
            RECEIVER_RETRY_SCHEDULE=",".join(map(str, retry_schedule(30))),
        )
        daemon = ReceiverProcess(env, log_path=workdir / "receiver.log")
        restarts: list[float] = [(await asyncio.to_thread(daemon.start)).started_in_s]
        load = WebhookLoad(daemon.base_url, senders, f"crash{rand.randrange(10**6)}")
        load.start()
        in_flight_at_kill: list[int] = []
        try:
            for _ in range(kills):
                await asyncio.sleep(rand.uniform(*uptime_s))
                in_flight_at_kill.append(load.in_flight)
                await asyncio.to_thread(daemon.kill)
                restarts.append((await asyncio.to_thread(daemon.start)).started_in_s)
            await asyncio.sleep(rand.uniform(*uptime_s))
            await load.stop()
            await _verify(report, daemon, load, sink, settle_s)
        finally:
            await asyncio.to_thread(daemon.stop)
    records, other = log_records(daemon.log_path)
    errors = [r for r in records if r.get("level") in ("ERROR", "CRITICAL")]
    report.check(not errors, f"{len(errors)} ERROR log record(s), first: {errors[:1]}")
    report.check(not other, f"{len(other)} log line(s) that are not JSON, first: {other[:1]}")
    report.figures = {
        "kills (SIGKILL)": kills,
        "concurrent senders": senders,
        "webhooks acknowledged (2xx)": len(load.acked),
        "HTTP attempts": load.attempts,
        "refused while down": load.refused,
        "cut in flight by a kill": load.cut,
        "requests in flight at kills (total)": sum(in_flight_at_kill),
        "non-2xx answers": dict(load.statuses) or 0,
        "webhooks never acknowledged": len(load.given_up),
        "restart to healthy, mean s": sum(restarts) / len(restarts),
        "restart to healthy, max s": max(restarts),
        **report.figures,
    }
    report.elapsed_s = time.monotonic() - started
    return report


async def _verify(
    report: Report, daemon: ReceiverProcess, load: WebhookLoad, sink: CallbackServer, settle_s: float
) -> None:
    report.check(not load.given_up, f"{len(load.given_up)} webhook(s) never got a 2xx")
    acked = set(load.acked)
    async with api_client(daemon.base_url) as api:
        jobs = {j["provider_job_id"]: j for j in await all_pages(api, "/v1/jobs", "jobs", provider="pixazo")}
        missing = acked - set(jobs)
        report.check(
            not missing, f"{len(missing)} acknowledged webhook(s) not in the store, e.g. {sorted(missing)[:3]}"
        )
        not_done = [pid for pid in acked & set(jobs) if jobs[pid]["status"] != "succeeded"]
        report.check(not not_done, f"{len(not_done)} acknowledged job(s) not succeeded")
        report.check(len(jobs) == len(acked), f"{len(jobs)} jobs in the store for {len(acked)} distinct webhooks")

        t0 = time.monotonic()
        all_arrived = await eventually(lambda: _true(acked <= _ids_in(sink)), settle_s, interval=0.3)
        arrival_s = time.monotonic() - t0

        async def store_says_delivered() -> bool:
            listing = await all_pages(api, "/v1/jobs", "jobs", provider="pixazo")
            return all(j["delivery_status"] == "delivered" for j in listing)

        recorded = await eventually(store_says_delivered, settle_s, interval=0.5)
        duplicates = len(await all_pages(api, "/v1/receipts", "receipts", provider="pixazo", outcome="duplicate"))
    by_job = callbacks_by_job(sink, report)
    undelivered = acked - set(by_job)
    report.check(all_arrived and not undelivered, f"{len(undelivered)} acknowledged job(s) never called back")
    report.check(recorded, "the store does not show every job delivered")
    resent = {pid: ids for pid, ids in by_job.items() if len(ids) > len(set(ids))}
    second_messages = {pid: ids for pid, ids in by_job.items() if len(set(ids)) > 1}
    report.check(not second_messages, f"{len(second_messages)} job(s) called back under two webhook-ids")
    report.figures.update(
        {
            "jobs in the store": len(jobs),
            "acknowledged but missing from the store": len(missing),
            "callbacks received": len(sink.requests),
            "jobs called back": len(acked & set(by_job)),
            "jobs never called back": len(undelivered),
            "duplicate callbacks, same webhook-id (jobs)": len(resent),
            "duplicate callbacks, same webhook-id (extra requests)": sum(len(v) - len(set(v)) for v in resent.values()),
            "duplicate callbacks, another webhook-id (jobs)": len(second_messages),
            "webhooks re-sent after a lost 2xx (duplicate receipts)": duplicates,
            "last callbacks arrived after load stopped, s": round(arrival_s, 2),
        }
    )


def _ids_in(sink: CallbackServer) -> set[str]:
    return {json.loads(r.body)["data"]["provider_job_id"] for r in list(sink.requests)}


async def _true(value: bool) -> bool:
    return value
