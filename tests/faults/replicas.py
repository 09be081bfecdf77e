"""Three `receiver serve` replicas on one PostgreSQL database, while replicas are SIGKILLed and PostgreSQL
restarts under webhook load and Oxen completions.

Webhooks (Pixazo, Runware) go to the replicas round-robin, some to two replicas at the same moment; Oxen
jobs are registered through `POST /v1/jobs` and completed on a fake Oxen's stream, which exactly one
replica (the holder of the `oxen_stream` lease) consumes. Afterwards: every acknowledged webhook is a job
with its outputs, every job is called back, none under two webhook-ids, no Oxen completion is missed (those
fired while no replica held the stream are found by the new holder's catch-up poll), no answer was a 5xx
other than 503, and the replicas came back from the PostgreSQL restart by themselves. The leader failover
time is measured by killing the stream's holder after the load: until another replica's /readyz says
`connected`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.fakes.callback import CallbackServer, callback_server
from tests.fakes.oxen import API_KEY, FakeOxen
from tests.faults.common import Report, all_pages, api_client, eventually, log_records, retry_schedule
from tests.faults.crash import callbacks_by_job
from tests.faults.own_cluster import own_cluster
from tests.faults.oxen_drops import fire_completions
from tests.faults.spread import SpreadLoad, all_ready, post_anywhere, stream_states, wait_leader
from tests.support import ReceiverProcess, process_env, serve_app

LEADER_TIMEOUT_S = 90.0  # lease ttl 15 s + renew 5 s + the stream's (re)connect, with a wide margin


async def replicas_under_faults(
    workdir: Path,
    *,
    replicas: int = 3,
    senders: int = 12,
    duration_s: float = 30.0,
    kills: int = 6,
    down_s: tuple[float, float] = (0.3, 1.5),
    duplicate_share: float = 0.1,
    oxen_jobs: int = 300,
    failovers: int = 1,
    restart_postgres: bool = True,
    settle_s: float = 120.0,
    seed: int | None = None,
) -> Report:
    rand = random.Random(seed)
    report = Report(f"{replicas} replicas on PostgreSQL: SIGKILLs, a PostgreSQL restart")
    started = time.monotonic()
    fake = FakeOxen()
    # A cluster of the scenario's own: it is restarted in the middle, which the machine's shared server never is.
    async with own_cluster() as cluster, callback_server() as sink, serve_app(fake.app) as oxen_server:
        url = cluster.url
        fake.base_url = oxen_server.base_url
        env = process_env(
            workdir,
            RECEIVER_DATABASE_URL=url,
            RECEIVER_DEFAULT_CALLBACK_URL=sink.url("/hook"),
            RECEIVER_OXEN_API_KEY=API_KEY,
            RECEIVER_OXEN_BASE_URL=fake.base_url,
            RECEIVER_RECONCILE_AFTER_S="3600",  # keep the reconciler out: the catch-up poll must do it
            RECEIVER_LOG_FORMAT="json",
            RECEIVER_LOG_LEVEL="WARNING",
            RECEIVER_CALLBACK_TIMEOUT_S="5",
            RECEIVER_RETRY_SCHEDULE=",".join(map(str, retry_schedule(120))),
        )
        daemons = [ReceiverProcess(env, log_path=workdir / f"replica{i}.log") for i in range(replicas)]
        try:
            for daemon in daemons:
                await asyncio.to_thread(daemon.start)
            await _run(
                report,
                daemons,
                fake,
                sink,
                rand,
                duration_s=duration_s,
                kills=kills,
                down_s=down_s,
                senders=senders,
                duplicate_share=duplicate_share,
                oxen_jobs=oxen_jobs,
                failovers=failovers,
                restart_postgres=cluster.restart if restart_postgres else None,
                settle_s=settle_s,
            )
        finally:
            await asyncio.gather(*(asyncio.to_thread(d.stop) for d in daemons))
            fake.close()
    errors: collections.Counter[str] = collections.Counter()
    for daemon in daemons:
        records, _ = log_records(daemon.log_path)
        errors.update(_error_kind(r) for r in records if r.get("level") in ("ERROR", "CRITICAL"))
    report.figures["ERROR log records (all replicas), by logger: exception"] = dict(errors.most_common(6)) or 0
    report.elapsed_s = time.monotonic() - started
    return report


async def _run(
    report: Report,
    daemons: list[ReceiverProcess],
    fake: FakeOxen,
    sink: CallbackServer,
    rand: random.Random,
    *,
    duration_s: float,
    kills: int,
    down_s: tuple[float, float],
    senders: int,
    duplicate_share: float,
    oxen_jobs: int,
    failovers: int,
    restart_postgres: Callable[[], Awaitable[float]] | None,
    settle_s: float,
) -> None:
    generations = [fake.submit() for _ in range(oxen_jobs)]
    oxen_job_ids = {
        g: (await post_anywhere(daemons, "/v1/jobs", {"provider": "oxen", "provider_job_id": g}))["id"]
        for g in generations
    }
    leader = await wait_leader(daemons, LEADER_TIMEOUT_S)
    report.check(leader is not None, "no replica took the Oxen stream")
    states = await stream_states(daemons)
    report.check(
        sorted(states.values()) == ["connected"] + ["standby"] * (len(daemons) - 1),
        f"stream states at the start {states}: expected one connected, the others standby",
    )
    report.check(fake.live_streams == 1, f"{fake.live_streams} streams open at Oxen: expected exactly one")

    held_back = generations[: max(1, oxen_jobs // 10) * failovers]  # fired while no replica holds the stream
    expected: dict[str, str] = {}
    load = SpreadLoad(daemons, senders, f"repl{rand.randrange(10**6)}", rand, duplicate_share)
    chaos: dict[str, Any] = {"kills": 0, "leader kills": 0, "restart to healthy, s": []}
    load.start()
    firing = asyncio.create_task(
        fire_completions(fake, generations[len(held_back) :], duration_s * 0.9, expected, rand)
    )
    most_streams = [fake.live_streams]
    sampler = asyncio.create_task(_sample_streams(fake, most_streams))
    try:
        await _chaos(
            daemons,
            load,
            rand,
            chaos,
            duration_s=duration_s,
            kills=kills,
            down_s=down_s,
            restart_postgres=restart_postgres,
        )
        await firing
    finally:
        await load.stop()
        firing.cancel()
    failover_s: list[float] = []
    try:
        for number in range(failovers):
            batch = held_back[number::failovers]
            failover_s.append(await _failover(report, daemons, fake, batch, expected, rand))
    finally:
        sampler.cancel()
    report.check(most_streams[0] <= 1, f"{most_streams[0]} Oxen streams open at once: two replicas consumed it")

    async with api_client(daemons[0].base_url) as api:

        async def settled() -> bool:
            jobs = await _jobs(api)
            done = all(j["status"] != "pending" for j in jobs.values())
            return done and {j["id"] for j in jobs.values()} <= _called_back(sink)

        t0 = time.monotonic()
        ok = await eventually(settled, settle_s, interval=0.5)
        settle_took = time.monotonic() - t0
        jobs = await _jobs(api)
        receipts = await all_pages(api, "/v1/receipts", "receipts", provider="oxen")
    report.check(ok, f"not every job finished and called back within {settle_s} s")
    _verify(report, load, jobs, expected, oxen_job_ids, sink)
    by_source = collections.Counter((r["source"], r["outcome"]) for r in receipts)
    restarts = chaos.pop("restart to healthy, s")
    readyz_5xx = {c: n for c, n in chaos.get("/readyz answers after the restart", {}).items() if c >= 500 and c != 503}
    report.check(not readyz_5xx, f"/readyz answered {readyz_5xx} after the PostgreSQL restart")
    report.check(
        chaos.get("PostgreSQL back → every replica ready, s") != "never",
        "the replicas did not all become ready within 60 s of the PostgreSQL restart",
    )
    report.figures = {
        "replicas": len(daemons),
        "concurrent senders": senders,
        "webhooks acknowledged (2xx)": len(load.acked),
        "  Pixazo / Runware": "{} / {}".format(
            *(sum(1 for p in load.acked.values() if p == n) for n in ("pixazo", "runware"))
        ),
        "  sent to two replicas at once (both 2xx)": f"{load.duplicated} ({load.both_acked})",
        "HTTP attempts": load.attempts,
        "refused (replica down)": load.refused,
        "cut in flight": load.cut,
        "non-2xx answers, whole run": dict(load.statuses) or 0,
        "  of which during the PostgreSQL restart": dict(load.window) or 0,
        "webhooks never acknowledged": len(load.given_up),
        **chaos,
        "replica restart to healthy, mean / max s": (
            f"{sum(restarts) / len(restarts):.2f} / {max(restarts):.2f}" if restarts else "-"
        ),
        "Oxen jobs (registered, completed)": len(expected),
        "  fired while no replica held the stream (lost by Oxen)": len(fake.lost),
        "  applied from the stream / by a catch-up poll": (
            f"{by_source[('stream', 'applied')]} / {by_source[('poll', 'applied')]}"
        ),
        "Oxen streams opened / most open at once (sampled every 10 ms)": f"{fake.connections} / {most_streams[0]}",
        "leader failover (kill → another connected), s": ", ".join(f"{s:.1f}" for s in failover_s) or "-",
        **report.figures,
        "after the failover(s): until every job finished and called back, s": round(settle_took, 1),
    }


async def _chaos(
    daemons: list[ReceiverProcess],
    load: SpreadLoad,
    rand: random.Random,
    chaos: dict[str, Any],
    *,
    duration_s: float,
    kills: int,
    down_s: tuple[float, float],
    restart_postgres: Callable[[], Awaitable[float]] | None,
) -> None:
    """`kills` SIGKILLs of random replicas (each restarted after a moment) and one PostgreSQL restart in the
    middle, one at a time, spread over `duration_s`."""
    actions = ["kill"] * kills
    if restart_postgres is not None:
        actions.insert(len(actions) // 2, "postgres")
    slot = duration_s / (len(actions) + 1)
    began = time.monotonic()
    for number, action in enumerate(actions, start=1):
        await asyncio.sleep(max(0.0, began + number * slot + rand.uniform(-slot / 4, slot / 4) - time.monotonic()))
        if action == "postgres":
            load.in_window = True
            probes: collections.Counter[int] = collections.Counter()
            try:
                assert restart_postgres is not None  # "postgres" is among the actions only then
                chaos["PostgreSQL restart → accepting again, s"] = round(await restart_postgres(), 2)
                t0 = time.monotonic()
                back = await all_ready(daemons, 60, probes)
                chaos["PostgreSQL back → every replica ready, s"] = round(time.monotonic() - t0, 2) if back else "never"
            finally:
                load.in_window = False
                chaos["/readyz answers after the restart"] = dict(probes)
            continue
        index = rand.randrange(len(daemons))
        was = (await stream_states(daemons))[index]
        chaos["kills"] += 1
        chaos["leader kills"] += was == "connected"
        await asyncio.to_thread(daemons[index].kill)
        await asyncio.sleep(rand.uniform(*down_s))
        chaos["restart to healthy, s"].append((await asyncio.to_thread(daemons[index].start)).started_in_s)
    await asyncio.sleep(max(0.0, began + duration_s - time.monotonic()))


async def _failover(
    report: Report,
    daemons: list[ReceiverProcess],
    fake: FakeOxen,
    batch: list[str],
    expected: dict[str, str],
    rand: random.Random,
) -> float:
    """Kill the stream's holder; complete `batch` while no replica holds it; the seconds until another does."""
    leader = await wait_leader(daemons, LEADER_TIMEOUT_S)
    if leader is None:
        report.problems.append("no replica holds the Oxen stream before the failover")
        return float("nan")
    await asyncio.to_thread(daemons[leader].kill)
    killed = time.monotonic()
    await eventually(_true_when(lambda: fake.live_streams == 0), 10, interval=0.02)
    lost_before = len(fake.lost)
    for generation_id in batch:
        failed = rand.random() < 0.2
        fake.complete(generation_id, error="content policy violation" if failed else None)
        expected[generation_id] = "failed" if failed else "succeeded"
    report.check(
        len(fake.lost) - lost_before == len(batch),
        f"only {len(fake.lost) - lost_before} of {len(batch)} completions fired with no stream open",
    )
    successor = await wait_leader(daemons, LEADER_TIMEOUT_S, not_index=leader)
    took = time.monotonic() - killed
    report.check(successor is not None, f"no other replica took the Oxen stream within {LEADER_TIMEOUT_S} s")
    await asyncio.to_thread(daemons[leader].start)
    return took


async def _sample_streams(fake: FakeOxen, most: list[int]) -> None:
    """Keep the largest number of streams seen open at Oxen at once in `most[0]`."""
    while True:
        most[0] = max(most[0], fake.live_streams)
        await asyncio.sleep(0.01)


def _error_kind(record: dict[str, Any]) -> str:
    """`logger: ExceptionType` of an ERROR record (its message carries ids; the type is what repeats)."""
    lines = str(record.get("exc_info") or "").strip().splitlines()
    kind = lines[-1].partition(":")[0].rpartition(".")[2] if lines else str(record.get("message", ""))[:40]
    return f"{record.get('logger')}: {kind}"


def _true_when(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check


async def _jobs(api: Any) -> dict[tuple[str, str], dict[str, Any]]:
    jobs: dict[tuple[str, str], dict[str, Any]] = {}
    for provider in ("pixazo", "runware", "oxen"):
        for job in await all_pages(api, "/v1/jobs", "jobs", provider=provider):
            jobs[(provider, job["provider_job_id"])] = job
    return jobs


def _called_back(sink: CallbackServer) -> set[str]:
    return {json.loads(r.body)["data"]["id"] for r in list(sink.requests)}


def _verify(
    report: Report,
    load: SpreadLoad,
    jobs: dict[tuple[str, str], dict[str, Any]],
    expected: dict[str, str],
    oxen_job_ids: dict[str, str],
    sink: CallbackServer,
) -> None:
    report.check(not load.given_up, f"{len(load.given_up)} webhook(s) never got a 2xx")
    acked = {(provider, job_id) for job_id, provider in load.acked.items()}
    missing = acked - set(jobs)
    report.check(not missing, f"{len(missing)} acknowledged webhook(s) not in the store, e.g. {sorted(missing)[:3]}")
    without_effect = [k for k in acked & set(jobs) if jobs[k]["status"] != "succeeded" or not jobs[k]["outputs"]]
    report.check(
        not without_effect,
        f"{len(without_effect)} acknowledged job(s) without their outputs, e.g. {without_effect[:3]}",
    )
    webhook_jobs = {k for k in jobs if k[0] != "oxen"}
    report.check(webhook_jobs == acked, f"{len(webhook_jobs)} webhook jobs in the store for {len(acked)} acknowledged")
    oxen = {pid: j for (provider, pid), j in jobs.items() if provider == "oxen"}
    report.check(
        set(oxen) == set(oxen_job_ids), f"{len(oxen)} Oxen jobs in the store for {len(oxen_job_ids)} registered"
    )
    wrong = [g for g, status in expected.items() if g not in oxen or oxen[g]["status"] != status]
    report.check(not wrong, f"{len(wrong)} Oxen completion(s) missed or misapplied, e.g. {wrong[:3]}")
    by_job = callbacks_by_job(sink, report)  # provider job id → webhook-ids (signatures checked)
    never = [k for k in jobs if k[1] not in by_job]
    report.check(not never, f"{len(never)} job(s) never called back, e.g. {never[:3]}")
    second_ids = {pid: ids for pid, ids in by_job.items() if len(set(ids)) > 1}
    report.check(
        not second_ids,
        f"{len(second_ids)} job(s) called back under two webhook-ids, e.g. {list(second_ids.items())[:2]}",
    )
    resent = {pid: ids for pid, ids in by_job.items() if len(ids) > len(set(ids))}
    five = {code: n for code, n in load.statuses.items() if code >= 500 and code != 503}
    report.check(not five, f"5xx answers other than 503: {five}")
    other = {code: n for code, n in load.statuses.items() if code < 500}
    report.check(not other, f"4xx answers to valid webhooks: {other}")
    report.figures.update(
        {
            "jobs in the store (webhooks + Oxen)": len(jobs),
            "acknowledged but missing from the store": len(missing),
            "Oxen completions missed": len(wrong),
            "callbacks received": len(sink.requests),
            "jobs never called back": len(never),
            "called back again, same webhook-id (jobs / extra requests)": f"{len(resent)} / {sum(len(v) - len(set(v)) for v in resent.values())}",
            "called back under two webhook-ids (jobs)": len(second_ids),
        }
    )
