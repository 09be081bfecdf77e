"""The callback endpoint is down for a while (connection refused, then 503s), then back: every result delivered.

Results keep arriving through the outage. Afterwards each job must be `delivered`, with exactly one 2xx
attempt, one `webhook-id`, and attempts numbered 1..n; none may be `failed`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import socket
import time
from pathlib import Path
from typing import Any

import httpx

from receiver.app import create_app
from tests.fakes.callback import CallbackServer, Reply
from tests.fakes.pixazo import completed
from tests.faults.common import Report, all_pages, api_client, eventually, hook_path, retry_schedule
from tests.support import make_settings, serve_app


async def _fire(client: httpx.AsyncClient, prefix: str, numbers: range, over_s: float) -> list[str]:
    """Post one webhook per number, spread evenly over `over_s` seconds; returns the job ids."""
    job_ids: list[str] = []
    gap = over_s / max(1, len(numbers))
    for n in numbers:
        response = await client.post(hook_path("pixazo"), content=json.dumps(completed(f"{prefix}_{n}")))
        response.raise_for_status()
        job_ids += response.json()["job_ids"]
        await asyncio.sleep(gap)
    return job_ids


async def callback_outage(
    workdir: Path,
    *,
    jobs: int = 300,
    refused_s: float = 5.0,
    failing_s: float = 5.0,
    settle_s: float = 60.0,
    seed: int | None = None,
) -> Report:
    rand = random.Random(seed)
    report = Report("callback endpoint down, then back")
    started = time.monotonic()
    prefix = f"outage{rand.randrange(10**6)}"
    # Bound but not listening: connections to it are refused until the fake starts serving on it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    # Enough attempts to outlast the outage twice over: running out would mark deliveries failed.
    schedule = retry_schedule(2 * (refused_s + failing_s) + 10)
    settings = make_settings(workdir, default_callback_url=url, retry_schedule=schedule, callback_timeout_s=2)
    third = jobs // 3
    fake = CallbackServer(default=Reply(503, headers={"Retry-After": "1"}, body=b"maintenance"))
    async with contextlib.AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(serve_app(create_app(settings)))
        client = await stack.enter_async_context(receiver.client())
        job_ids = await _fire(client, prefix, range(third), refused_s)
        await stack.enter_async_context(serve_app(fake.app, sock=sock))  # now answering, with 503s
        job_ids += await _fire(client, prefix, range(third, 2 * third), failing_s)
        fake.default = Reply(200)
        back = time.monotonic()
        job_ids += await _fire(client, prefix, range(2 * third, jobs), 1.0)
        api = await stack.enter_async_context(api_client(receiver.base_url))

        async def all_delivered() -> bool:
            listing = await all_pages(api, "/v1/jobs", "jobs", provider="pixazo")
            return all(j["delivery_status"] in ("delivered", "failed") for j in listing)

        settled = await eventually(all_delivered, settle_s, interval=0.2)
        drained_s = time.monotonic() - back
        listing = await all_pages(api, "/v1/jobs", "jobs", provider="pixazo")
        attempts = {j: (await api.get(f"/v1/jobs/{j}/deliveries")).json()["deliveries"] for j in job_ids}
        metrics = (await client.get("/metrics")).text
        fake.release()
    _check(report, settled, listing, attempts, fake, job_ids)
    kinds = collections.Counter(_kind(a) for each in attempts.values() for a in each)
    report.figures = {
        "jobs": jobs,
        "refused for, s": refused_s,
        "503 for, s": failing_s,
        "retry schedule (waits)": f"{len(schedule)} steps, {schedule[0]:g}…{max(schedule):g} s",
        "attempts, connection refused": kinds["refused"],
        "attempts, 503": kinds["503"],
        "attempts, 2xx": kinds["2xx"],
        "attempts, other": sum(v for k, v in kinds.items() if k not in ("refused", "503", "2xx")),
        "most attempts for one job": max((len(a) for a in attempts.values()), default=0),
        "delivered": sum(1 for j in listing if j["delivery_status"] == "delivered"),
        "failed": sum(1 for j in listing if j["delivery_status"] == "failed"),
        "endpoint back → all delivered, s": round(drained_s, 2),
        "metric deliveries delivered": _sample(metrics, 'receiver_deliveries_total{outcome="delivered"}'),
        "metric deliveries retry": _sample(metrics, 'receiver_deliveries_total{outcome="retry"}'),
        **report.figures,
    }
    report.elapsed_s = time.monotonic() - started
    return report


def _kind(attempt: dict[str, Any]) -> str:
    code = attempt["status_code"]
    if code is None:
        return "refused" if "connection" in (attempt["error"] or "") else "no answer"
    return "2xx" if 200 <= code < 300 else str(code)


def _check(
    report: Report,
    settled: bool,
    listing: list[dict[str, Any]],
    attempts: dict[str, list[dict[str, Any]]],
    fake: CallbackServer,
    job_ids: list[str],
) -> None:
    report.check(settled, "not every job reached a final delivery status in time")
    report.check(len(listing) == len(job_ids) == len(set(job_ids)), f"{len(listing)} jobs for {len(job_ids)} webhooks")
    lost = [j["id"] for j in listing if j["delivery_status"] != "delivered"]
    report.check(not lost, f"{len(lost)} job(s) not delivered, e.g. {lost[:3]}")
    for job_id, tries in attempts.items():
        ok = [a for a in tries if a["status_code"] is not None and 200 <= a["status_code"] < 300]
        if len(ok) != 1 or tries[-1] is not ok[-1] or [a["attempt"] for a in tries] != list(range(1, len(tries) + 1)):
            report.problems.append(f"job {job_id}: attempts {[(a['attempt'], a['status_code']) for a in tries]}")
    by_job: dict[str, set[str]] = collections.defaultdict(set)
    for request in fake.requests:
        by_job[json.loads(request.body)["data"]["id"]].add(request.webhook_id)
    report.check(set(by_job) == set(job_ids), f"callbacks arrived for {len(by_job)} of {len(job_ids)} jobs")
    several = [j for j, ids in by_job.items() if len(ids) > 1]
    report.check(not several, f"{len(several)} job(s) called back under more than one webhook-id")


def _sample(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None
