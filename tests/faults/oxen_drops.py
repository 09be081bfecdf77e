"""The Oxen stream is dropped again and again (cut, closed, refused for a while) while completions fire.

Oxen keeps no history, so whatever fires during a gap is gone from the stream; the catch-up poll after
each reconnect must recover it. The reconciler is kept out of the way (`reconcile_after_s` of an hour),
so every job that finishes proves the stream or the catch-up poll.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from dataclasses import replace
from pathlib import Path

from receiver.app import create_app
from tests.fakes.oxen import API_KEY, FAST_TUNING, FakeOxen
from tests.faults.common import Report, all_pages, api_client, eventually
from tests.support import make_settings, serve_app

# The tests' timings (stall timeout 0.5 s, reconnects after 20-100 ms), with more patience for polls: under
# this load a catch-up round polls hundreds of jobs at once.
FAST = replace(FAST_TUNING, poll_timeout_s=5)


async def oxen_drops(
    workdir: Path,
    *,
    generations: int = 500,
    duration_s: float = 20.0,
    drop_every_s: tuple[float, float] = (0.1, 0.6),
    settle_s: float = 30.0,
    seed: int | None = None,
) -> Report:
    rand = random.Random(seed)
    report = Report("Oxen stream dropped while completions fire")
    started = time.monotonic()
    fake = FakeOxen()
    faults: collections.Counter[str] = collections.Counter()
    async with serve_app(fake.app) as oxen_server:
        fake.base_url = oxen_server.base_url
        settings = make_settings(workdir, oxen_api_key=API_KEY, oxen_base_url=fake.base_url, reconcile_after_s=3600)
        try:
            async with (
                serve_app(create_app(settings, stream_tuning=FAST)) as receiver,
                api_client(receiver.base_url) as api,
            ):
                expected: dict[str, str] = {}  # generation id → succeeded | failed
                jobs: dict[str, str] = {}  # generation id → job id
                for _ in range(generations):
                    generation_id = fake.submit()
                    reply = await api.post("/v1/jobs", json={"provider": "oxen", "provider_job_id": generation_id})
                    reply.raise_for_status()
                    jobs[generation_id] = reply.json()["id"]
                await fake.wait_connections(1, timeout=10)

                firing = asyncio.create_task(fire_completions(fake, list(jobs), duration_s, expected, rand))
                while not firing.done():
                    await asyncio.sleep(rand.uniform(*drop_every_s))
                    await _fault(fake, rand, faults)
                await firing
                fake.refuse_streams = None

                async def none_pending() -> bool:
                    return not await all_pages(api, "/v1/jobs", "jobs", provider="oxen", status="pending")

                t0 = time.monotonic()
                settled = await eventually(none_pending, settle_s, interval=0.1)
                caught_up_s = time.monotonic() - t0
                listing = {j["provider_job_id"]: j for j in await all_pages(api, "/v1/jobs", "jobs", provider="oxen")}
                receipts = await all_pages(api, "/v1/receipts", "receipts", provider="oxen")
                metrics = (await api.get("/metrics")).text
        finally:
            fake.close()
    report.check(settled, "jobs still pending after the stream came back for good")
    wrong = [g for g, status in expected.items() if listing[g]["status"] != status]
    report.check(not wrong, f"{len(wrong)} job(s) not in the state their completion says, e.g. {wrong[:3]}")
    no_url = [g for g, s in expected.items() if s == "succeeded" and not listing[g]["outputs"]]
    report.check(not no_url, f"{len(no_url)} succeeded job(s) without their output")
    by_source = collections.Counter((r["source"], r["outcome"]) for r in receipts)
    reconnects = next(
        (
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("receiver_oxen_stream_reconnects_total ")
        ),
        0.0,
    )
    report.figures = {
        "generations (registered jobs)": generations,
        "completions fired": len(expected),
        "  of which failed": sum(1 for s in expected.values() if s == "failed"),
        "fired while no stream was open (lost by Oxen)": len(fake.lost),
        "stream faults injected": dict(faults),
        "streams opened": fake.connections,
        "metric stream (re)connects": reconnects,
        "applied from the stream": by_source[("stream", "applied")],
        "applied by the catch-up poll": by_source[("poll", "applied")],
        "duplicates (stream and poll both saw it)": by_source[("stream", "duplicate")]
        + by_source[("poll", "duplicate")],
        "status polls at Oxen": len(fake.requests_to("/api/ai/queue/")),
        "jobs not finished": sum(1 for j in listing.values() if j["status"] == "pending"),
        "last fault → all finished, s": round(caught_up_s, 2),
    }
    report.elapsed_s = time.monotonic() - started
    return report


async def fire_completions(
    fake: FakeOxen, generation_ids: list[str], over_s: float, expected: dict[str, str], rand: random.Random
) -> None:
    """Complete every generation, in random order, spread over `over_s` seconds; one in five fails."""
    rand.shuffle(generation_ids)
    gap = over_s / max(1, len(generation_ids))
    for generation_id in generation_ids:
        if rand.random() < 0.2:
            fake.complete(generation_id, error="content policy violation")
            expected[generation_id] = "failed"
        else:
            fake.complete(generation_id)
            expected[generation_id] = "succeeded"
        await asyncio.sleep(gap)


async def _fault(fake: FakeOxen, rand: random.Random, faults: collections.Counter[str]) -> None:
    """One fault: cut the connection, close it cleanly, or refuse reconnects (503) for a while."""
    kind = rand.choice(("cut", "cut", "close", "refused"))
    faults[kind] += 1
    if kind == "refused":
        fake.refuse_streams = 503
        fake.drop(abort=True)
        await asyncio.sleep(rand.uniform(0.05, 0.4))
        fake.refuse_streams = None
    else:
        fake.drop(abort=kind == "cut")
