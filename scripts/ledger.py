"""`python -m scripts.bench ledger`: open-loop webhooks at a fixed rate into real `receiver serve`
processes (SQLite; PostgreSQL with 1 and 2 replicas), every job called back to a server of the bench's
own, and an exact ledger at the end. A run whose ledger does not balance prints VOID, says why, and
exits 1.

    .venv/bin/python -m scripts.bench ledger                          # 500/s for 20 s on each store
    .venv/bin/python -m scripts.bench ledger --stores sqlite --rate 50 --seconds 3
    .venv/bin/python -m scripts.bench ledger --find-max               # then step the rate up until p99 > 100 ms
    .venv/bin/python -m scripts.bench ledger --sink-redis redis://127.0.0.1:6379/0   # also check RECEIVER_SINKS

The ledger of each run (every webhook the bench sent, warm-up included):
- sent = answered 2xx + refused 4xx + errors (other statuses, connection errors, timeouts), and every
  webhook scheduled is in those books;
- every 2xx has exactly one job (listed through the API), every 4xx none; a job for an error is allowed
  (counted), a job for a webhook not in the books is not;
- every job is called back exactly once, under one webhook-id, signed: a second arrival under the same
  webhook-id is a duplicate delivery, a second webhook-id for one job or a callback for no job is a
  violation (the callback server answers 200, so no retries are expected);
- with `--sink-redis`, every job's event (read from `/v1/events`) is in the Redis stream, under its id
  and with the job as subject.
Latency is taken from when each webhook was due, not when it was written: p50/p99/p99.9 to its 2xx
and to its callback's arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx

from scripts import benchlib as bl
from scripts import benchpg
from scripts.ledger_callbacks import FAULTS as CALLBACK_FAULTS
from tests.support import API_TOKEN, SIGNING_SECRET

STORES = {"sqlite": 1, "pg-1": 1, "pg-2": 2}  # target → replicas
FAULTS = (*CALLBACK_FAULTS, "lose-webhook")
HELD_P99_MS = 100.0
MIN_RATE = 10.0  # where a search downwards gives up
LATE_MS = 10.0  # a write later than this after its due time means the generator fell behind


# -- the books ---------------------------------------------------------------------------------------


@dataclass
class Webhook:
    """One webhook the generator sent (times: `time.monotonic()`)."""

    key: str  # its provider_job_id
    due: float
    sent: float | None
    answered: float | None
    status: int | None
    error: str | None
    meant_refused: bool = False  # sent with a wrong token on purpose


@dataclass
class Callback:
    webhook_id: str
    job_id: str
    key: str  # provider_job_id from its body
    type: str
    arrival: float
    signed: bool


@dataclass
class Ledger:
    scheduled: int
    sent: int
    ok: int = 0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    jobs: int = 0
    stored_despite_error: int = 0
    called_back: int = 0
    duplicates: int = 0
    events: int | None = None  # with a sink: events of these jobs, and how many are in the stream
    in_sink: int | None = None
    violations: list[str] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    callback_ms: list[float] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return not self.violations

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def _examples(items: Iterable[str], limit: int = 3) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


def reckon(
    scheduled: int,
    webhooks: Sequence[Webhook],
    jobs: Sequence[tuple[str, str]],
    callbacks: Sequence[Callback],
    events: Sequence[tuple[int, str]] | None = None,
    stream: dict[int, str] | None = None,
) -> Ledger:
    """The ledger of one run: `jobs` are (job id, provider_job_id) as the API lists them, `events` the
    (event id, job id) of `/v1/events`, `stream` the sink's entries (event id → subject)."""
    ledger = Ledger(scheduled=scheduled, sent=len(webhooks))
    bad = ledger.violations
    if len(webhooks) != scheduled:
        bad.append(f"{scheduled:,} webhooks scheduled but {len(webhooks):,} in the books")
    outcome: dict[str, str] = {}
    for w in webhooks:
        if w.status is not None and 200 <= w.status < 300:
            kind = "ok"
            ledger.ok += 1
            assert w.answered is not None
            ledger.ack_ms.append((w.answered - w.due) * 1000)
        elif w.status is not None and 400 <= w.status < 500:
            kind = "refused"
            ledger.refused += 1
        else:
            kind = "error"
            reason = w.error or f"HTTP {w.status}"
            ledger.errors[reason] = ledger.errors.get(reason, 0) + 1
        if w.sent is not None:
            ledger.lag_ms.append((w.sent - w.due) * 1000)
        outcome[w.key] = kind
    if ledger.ok + ledger.refused + ledger.error_count != ledger.sent:  # each webhook is counted once above
        bad.append("answers do not add up to the webhooks sent")
    if accepted_on_purpose := [w.key for w in webhooks if w.meant_refused and outcome[w.key] == "ok"]:
        bad.append(
            f"{len(accepted_on_purpose)} webhooks with a wrong token answered 2xx ({_examples(accepted_on_purpose)})"
        )

    by_key: dict[str, list[str]] = collections.defaultdict(list)
    for job_id, key in jobs:
        by_key[key].append(job_id)
    ledger.jobs = len(jobs)
    if missing := [k for k, kind in outcome.items() if kind == "ok" and k not in by_key]:
        bad.append(f"{len(missing)} webhooks answered 2xx without a job ({_examples(missing)})")
    if several := [k for k, ids in by_key.items() if len(ids) > 1]:
        bad.append(f"{len(several)} webhooks with more than one job ({_examples(several)})")
    if stored_refusals := [k for k in by_key if outcome.get(k) == "refused"]:
        bad.append(f"{len(stored_refusals)} refused webhooks stored as jobs ({_examples(stored_refusals)})")
    if strangers := [k for k in by_key if k not in outcome]:
        bad.append(f"{len(strangers)} jobs for webhooks not in the books ({_examples(strangers)})")
    ledger.stored_despite_error = sum(1 for k in by_key if outcome.get(k) == "error")

    job_key = {job_id: key for job_id, key in jobs}
    webhook_ids: dict[str, set[str]] = collections.defaultdict(set)
    first: dict[str, float] = {}
    seen: set[tuple[str, str]] = set()
    for c in sorted(callbacks, key=lambda c: c.arrival):
        if (c.job_id, c.webhook_id) in seen:
            ledger.duplicates += 1
        seen.add((c.job_id, c.webhook_id))
        webhook_ids[c.job_id].add(c.webhook_id)
        first.setdefault(c.job_id, c.arrival)
    if unknown := sorted({c.job_id for c in callbacks if c.job_id not in job_key}):
        bad.append(f"{len(unknown)} callbacks for jobs the store does not hold ({_examples(unknown)})")
    if mismatched := sorted({c.job_id for c in callbacks if c.job_id in job_key and job_key[c.job_id] != c.key}):
        bad.append(f"{len(mismatched)} callbacks whose body names another provider_job_id ({_examples(mismatched)})")
    if unsigned := sorted({c.job_id for c in callbacks if not c.signed}):
        bad.append(f"{len(unsigned)} callbacks whose signature does not verify ({_examples(unsigned)})")
    if wrong_type := sorted({c.job_id for c in callbacks if c.type != "job.succeeded"}):
        bad.append(f"{len(wrong_type)} callbacks not job.succeeded ({_examples(wrong_type)})")
    if uncalled := [j for j in job_key if j not in webhook_ids]:
        bad.append(f"{len(uncalled)} jobs never called back ({_examples(uncalled)})")
    if twice := [j for j, ids in webhook_ids.items() if len(ids) > 1]:
        bad.append(f"{len(twice)} jobs called back under more than one webhook-id ({_examples(twice)})")
    if ledger.duplicates:
        bad.append(
            f"{ledger.duplicates} duplicate deliveries (the same webhook-id again, though every "
            "callback was answered 200)"
        )
    ledger.called_back = sum(1 for j in job_key if j in webhook_ids)
    due = {w.key: w.due for w in webhooks}
    ledger.callback_ms = [
        (first[j] - due[k]) * 1000 for j, k in job_key.items() if j in first and k in due and outcome.get(k) == "ok"
    ]

    if events is not None:
        per_job = collections.Counter(job_id for _, job_id in events)
        ledger.events = sum(1 for _, job_id in events if job_id in job_key)
        if no_event := [j for j in job_key if per_job[j] == 0]:
            bad.append(f"{len(no_event)} jobs without an event in /v1/events ({_examples(no_event)})")
        if stream is not None:
            ledger.in_sink = sum(1 for event_id, job_id in events if stream.get(event_id) == job_id)
            if absent := [f"event {i} ({j})" for i, j in events if j in job_key and stream.get(i) != j]:
                bad.append(
                    f"{len(absent)} events not in the sink's stream under their id and job ({_examples(absent)})"
                )
    return ledger


# -- the run -----------------------------------------------------------------------------------------


@dataclass
class Step:
    target: str
    label: str  # "warm-up", "fixed", "step"
    rate: float
    seconds: float
    ledger: Ledger
    generator_cpu_s: float
    connections: int
    capped: int = 0  # webhooks that waited for a connection: all --max-connections were busy

    def held(self) -> bool:
        """Balanced, every webhook 2xx, and p99 to both the 2xx and the callback under 100 ms."""
        lg = self.ledger
        return (
            lg.balanced
            and lg.ok == lg.scheduled
            and bl.percentile(lg.ack_ms, 99) < HELD_P99_MS
            and bl.percentile(lg.callback_ms, 99) < HELD_P99_MS
        )


class CallbackProcess:
    """`scripts.ledger_callbacks` in a process of its own."""

    def __init__(self, fault: str | None) -> None:
        args = [sys.executable, "-m", "scripts.ledger_callbacks", "--secret", SIGNING_SECRET]
        if fault:
            args += ["--fault", fault]
        self.proc = subprocess.Popen(args, cwd=bl.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"callback server did not start: {line!r}")
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"
        self.url = self.base + "/hook"

    async def count(self, client: httpx.AsyncClient, run: str) -> int:
        return int((await client.get(self.base + "/count", params={"run": run})).json()["jobs"])

    async def records(self, client: httpx.AsyncClient, run: str) -> list[Callback]:
        rows = (await client.get(self.base + "/records", params={"run": run}, timeout=60)).json()["records"]
        return [Callback(*row) for row in rows]

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Options:
    rate: float
    seconds: float
    warmup: float
    find_max: bool
    step_factor: float
    step_seconds: float
    max_rate: float
    drain_timeout: float
    settle: float
    refuse_every: int
    timeout: float
    max_connections: int
    fault: str | None
    sink_redis: str | None
    workdir: Path


async def _generate(opts: Options, ports: list[int], prefix: str, rate: float, seconds: float) -> dict[str, Any]:
    out = opts.workdir / f"{prefix}.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scripts.ledger_load",
        "--ports",
        ",".join(map(str, ports)),
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--prefix",
        prefix,
        "--out",
        str(out),
        "--refuse-every",
        str(opts.refuse_every),
        "--timeout",
        str(opts.timeout),
        "--max-connections",
        str(opts.max_connections),
        cwd=bl.ROOT,
        stderr=subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {err.decode()[-2000:]}")
    return dict(json.loads(out.read_text()))


async def _list_jobs(client: httpx.AsyncClient, base: str, prefix: str, since: str) -> list[tuple[str, str]]:
    jobs: list[tuple[str, str]] = []
    cursor: str | None = None
    while True:
        params = {"provider": "pixazo", "since": since, "limit": "500", **({"cursor": cursor} if cursor else {})}
        reply = await client.get(base + "/v1/jobs", params=params, headers={"Authorization": f"Bearer {API_TOKEN}"})
        reply.raise_for_status()
        page = reply.json()
        jobs += [(j["id"], j["provider_job_id"]) for j in page["jobs"] if j["provider_job_id"].startswith(prefix)]
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs


async def _read_events(
    client: httpx.AsyncClient, base: str, after: int, job_ids: set[str], timeout: float
) -> list[tuple[int, str]]:
    """`/v1/events` replayed after event `after`, until every job in `job_ids` has shown up (or `timeout`)."""
    events: list[tuple[int, str]] = []
    missing = set(job_ids)
    event_id = 0
    try:
        async with asyncio.timeout(timeout):
            async with client.stream(
                "GET",
                base + "/v1/events",
                params={"last_event_id": str(after)},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
                timeout=None,
            ) as reply:
                async for line in reply.aiter_lines():
                    if line.startswith("id:"):
                        event_id = int(line[3:].strip())
                    elif line.startswith("data:"):
                        job_id = json.loads(line[5:])["id"]
                        events.append((event_id, job_id))
                        missing.discard(job_id)
                        if not missing:
                            break
    except TimeoutError:
        pass
    return events


def _redis_stream(url: str) -> tuple[str, str]:
    """(the URL redis-py connects to, the stream's name) from a sink URL."""
    parts = urllib.parse.urlsplit(url)
    stream = urllib.parse.parse_qs(parts.query).get("stream", ["receiver:events"])[0]
    return urllib.parse.urlunsplit(parts._replace(query="")), stream


async def _read_stream(url: str, events: Sequence[tuple[int, str]], timeout: float) -> dict[int, str]:
    """The sink's entries (event id → subject) for these events, waiting up to `timeout` for its lag."""
    import redis.asyncio as redis  # only with --sink-redis

    address, stream = _redis_stream(url)
    client = redis.Redis.from_url(address)
    wanted = {event_id for event_id, _ in events}
    found: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            start = f"{min(wanted)}-0" if wanted else "-"
            while True:
                entries = cast(
                    list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(stream, min=start, max="+", count=1000)
                )
                for entry_id, fields in entries:
                    found[int(entry_id.split(b"-")[0])] = fields.get(b"subject", b"").decode()
                if len(entries) < 1000:
                    break
                start = "(" + entries[-1][0].decode()
            if wanted <= set(found) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)
    finally:
        await client.aclose()


async def _run_step(
    opts: Options,
    target: str,
    servers: list[bl.Served],
    callbacks: CallbackProcess,
    label: str,
    rate: float,
    seconds: float,
    events_after: list[int],
) -> Step:
    prefix = f"{target}-{label}-{rate:g}-{uuid.uuid4().hex[:6]}"
    since = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    gen = await _generate(opts, [s.port for s in servers], prefix, rate, seconds)
    count = int(gen["count"])
    start = float(gen["start"])
    webhooks = [
        Webhook(
            f"{prefix}-{i}",
            start + i / rate,
            gen["sent"][i],
            gen["answered"][i],
            gen["status"][i],
            gen["error"][i],
            opts.refuse_every > 0 and i % opts.refuse_every == opts.refuse_every - 1,
        )
        for i in range(count)
    ]
    if opts.fault == "lose-webhook":  # the books lose one answered webhook: the ledger must notice
        webhooks = [w for w in webhooks if w.key != next((x.key for x in webhooks if x.status == 200), None)]
    base = servers[0].base_url
    async with httpx.AsyncClient(timeout=30) as client:
        jobs = await _list_jobs(client, base, prefix + "-", since)
        deadline = time.monotonic() + opts.drain_timeout
        while await callbacks.count(client, prefix) < len(jobs) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(opts.settle)  # a late duplicate or a job committed after its timeout shows up here
        jobs = await _list_jobs(client, base, prefix + "-", since)
        received = await callbacks.records(client, prefix)
        events = stream = None
        if opts.sink_redis:
            events = await _read_events(client, base, events_after[0], {j for j, _ in jobs}, opts.drain_timeout)
            if events:
                events_after[0] = max(events_after[0], max(e for e, _ in events))
            stream = await _read_stream(opts.sink_redis, events, opts.drain_timeout)
    ledger = reckon(count, webhooks, jobs, received, events, stream)
    return Step(
        target, label, rate, seconds, ledger, float(gen["cpu_s"]), int(gen["connections_opened"]), int(gen["capped"])
    )


async def _run_target(opts: Options, target: str, servers: list[bl.Served], callbacks: CallbackProcess) -> list[Step]:
    for server in servers:
        await asyncio.to_thread(server.start)
    events_after = [0]
    steps: list[Step] = []
    try:
        if opts.warmup > 0:
            steps.append(
                await _run_step(opts, target, servers, callbacks, "warm-up", opts.rate, opts.warmup, events_after)
            )
            report_step(steps[-1])
        steps.append(await _run_step(opts, target, servers, callbacks, "fixed", opts.rate, opts.seconds, events_after))
        report_step(steps[-1])
        rate = opts.rate
        if opts.find_max and not steps[-1].held():  # down until a rate is held
            while not steps[-1].held() and rate / opts.step_factor >= MIN_RATE:
                rate = round(rate / opts.step_factor)
                steps.append(
                    await _run_step(opts, target, servers, callbacks, "step", rate, opts.step_seconds, events_after)
                )
                report_step(steps[-1])
        else:  # up until one is not
            while opts.find_max and steps[-1].held() and rate * opts.step_factor <= opts.max_rate:
                rate = round(rate * opts.step_factor)
                steps.append(
                    await _run_step(opts, target, servers, callbacks, "step", rate, opts.step_seconds, events_after)
                )
                report_step(steps[-1])
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)
    return steps


def _env(
    opts: Options, target: str, database_url: str | None, callbacks: CallbackProcess, sink_stream: str | None
) -> dict[str, str]:
    """`receiver serve` as a user runs it (default logging), on the target's own store, calling back to
    the bench's server."""
    env = bl.receiver_env(opts.workdir / f"{target}.db", RECEIVER_DEFAULT_CALLBACK_URL=callbacks.url)
    del env["RECEIVER_LOG_LEVEL"]
    if database_url:
        env["RECEIVER_DATABASE_URL"] = database_url
    if sink_stream:
        env["RECEIVER_SINKS"] = sink_stream
    return env


def _sink_url(opts: Options, target: str) -> str | None:
    """A stream of the run's own per store (event ids start again at 1 in each store)."""
    if not opts.sink_redis:
        return None
    parts = urllib.parse.urlsplit(opts.sink_redis)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query["stream"] = f"{query.get('stream', 'receiver:events')}:ledger-{target}-{uuid.uuid4().hex[:8]}"
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _drop_stream(url: str) -> None:
    import redis

    address, stream = _redis_stream(url)
    client = redis.Redis.from_url(address)
    try:
        client.delete(stream)
    finally:
        client.close()


def run_target(opts: Options, target: str, callbacks: CallbackProcess) -> list[Step]:
    replicas = STORES[target]
    database_url = benchpg.create_database(f"ledger_{target.replace('-', '_')}") if target != "sqlite" else None
    sink = _sink_url(opts, target)
    target_opts = opts if sink is None else Options(**{**opts.__dict__, "sink_redis": sink})
    servers = [
        bl.Served(
            f"ledger-{target}-{i}", "", opts.workdir, cli=True, env=_env(opts, target, database_url, callbacks, sink)
        )
        for i in range(replicas)
    ]
    try:
        return asyncio.run(_run_target(target_opts, target, servers, callbacks))
    finally:
        if database_url:
            benchpg.drop_database(database_url)
        if sink:
            _drop_stream(sink)


# -- the report ---------------------------------------------------------------------------------------


def _pcts(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"p50 {bl.percentile(values, 50):.1f}  p99 {bl.percentile(values, 99):.1f}  "
        f"p99.9 {bl.percentile(values, 99.9):.1f} ms  ({len(values):,})"
    )


def behind(step: Step) -> str | None:
    late = [x for x in step.ledger.lag_ms if x > LATE_MS]
    if not late:
        return None
    why = (
        f": {step.capped:,} found all {step.connections} connections busy (the cap) and waited for one"
        if step.capped
        else ": its own process was late (CPU)"
    )
    return (
        f"GENERATOR BEHIND SCHEDULE: {len(late):,} of {len(step.ledger.lag_ms):,} webhooks written more than "
        f"{LATE_MS:g} ms after they were due (worst {max(late):.0f} ms){why}; their latency still counts "
        "from when they were due"
    )


def report_step(step: Step) -> None:
    lg = step.ledger
    head = f"{step.target}, {step.label}, {step.rate:,.0f} webhooks/s for {step.seconds:g} s"
    print(f"\n{head}: {'BALANCED' if lg.balanced else 'VOID'}", flush=True)
    errors = ", ".join(f"{n} {why}" for why, n in sorted(lg.errors.items())) or "0"
    print(f"  sent {lg.sent:,} (scheduled {lg.scheduled:,}) = 2xx {lg.ok:,} + refused {lg.refused:,} + errors {errors}")
    print(
        f"  jobs {lg.jobs:,} (of them for errored webhooks: {lg.stored_despite_error}); called back "
        f"{lg.called_back:,}; duplicate deliveries {lg.duplicates}"
    )
    if lg.events is not None:
        print(f"  sink: {lg.events:,} events of these jobs in /v1/events, {lg.in_sink or 0:,} of them in the stream")
    print(f"  scheduled → 2xx       {_pcts(lg.ack_ms)}")
    print(f"  scheduled → callback  {_pcts(lg.callback_ms)}")
    lag = lg.lag_ms
    print(
        f"  generator: written p99 {bl.percentile(lag, 99):.1f} ms / worst {max(lag, default=0):.1f} ms after due; "
        f"{step.connections} connections opened; its CPU {step.generator_cpu_s:.2f} s"
    )
    if note := behind(step):
        print(f"  {note}")
    for reason in lg.violations:
        print(f"  VOID: {reason}")


def machine(pg_version: str | None) -> str:
    info = bl.machine()
    memory = "unknown"
    try:
        kib = next(
            int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
        )
        memory = f"{kib / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        pass
    text = (
        f"nproc {info['cores']}, CPU {info['cpu']}, memory {memory}, {platform.system()} {platform.release()}, "
        f"Python {info['python']}, SQLite {info['sqlite']}"
    )
    return text + (f", PostgreSQL {pg_version}" if pg_version else "")


def _trio(values: list[float]) -> str:
    return "/".join(f"{bl.percentile(values, q):.1f}" for q in (50, 99, 99.9)) if values else "–"


def summary(steps: list[Step], find_max: bool) -> tuple[str, str]:
    """(plain text, markdown) table of the measured runs (not the warm-ups)."""
    header = (
        "store",
        "run",
        "rate/s",
        "sent = 2xx + 4xx + errors",
        "→ 2xx p50/p99/p99.9 ms",
        "→ callback p50/p99/p99.9 ms",
        "generator late p99/max ms",
        "ledger",
    )
    rows = []
    for s in steps:
        if s.label == "warm-up":
            continue
        lg = s.ledger
        rows.append(
            (
                s.target,
                s.label,
                f"{s.rate:,.0f}",
                f"{lg.sent:,} = {lg.ok:,} + {lg.refused:,} + {lg.error_count:,}",
                _trio(lg.ack_ms),
                _trio(lg.callback_ms),
                f"{bl.percentile(lg.lag_ms, 99):.1f}/{max(lg.lag_ms, default=0):.0f}",
                "balanced" if lg.balanced else "VOID",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    if find_max:
        for target in dict.fromkeys(s.target for s in steps):
            mine = [s for s in steps if s.target == target and s.label != "warm-up"]
            held = [s.rate for s in mine if s.held()]
            line = f"{target}: highest rate held (balanced, all 2xx, both p99 < {HELD_P99_MS:g} ms): "
            line += f"{max(held):,.0f} webhooks/s" if held else "none"
            failed = [s.rate for s in mine if not s.held() and (not held or s.rate > max(held))]
            if failed:
                line += f" (next step up, {min(failed):,.0f}/s, was not)"
            elif mine:
                line += " (stopped at --max-rate)"
            text += "\n" + line
            md.append("")
            md.append(line)
    return text, "\n".join(md) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench ledger",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated subset of {','.join(STORES)}")
    parser.add_argument("--rate", type=float, default=500.0, help="webhooks per second (default 500)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the measured run (default 20)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of warm-up at the rate, in the ledger but not in the figures (default 2; 0: none)",
    )
    parser.add_argument(
        "--find-max",
        action="store_true",
        help="after the fixed run, step the rate up by "
        "--step-factor until a step is not held (unbalanced, not all 2xx, or p99 ≥ 100 ms); "
        "down, when the fixed run is not held, until one is",
    )
    parser.add_argument("--step-factor", type=float, default=1.25)
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--max-rate", type=float, default=20_000.0)
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="how long to wait for the callbacks (and sink entries) after the last webhook",
    )
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds to wait once every job is called back, for late duplicates"
    )
    parser.add_argument(
        "--refuse-every",
        type=int,
        default=0,
        help="send every Nth webhook with a wrong token (each must be refused and stored as nothing)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="per-webhook answer timeout, seconds")
    parser.add_argument("--max-connections", type=int, default=512, help="the generator's connection cap")
    parser.add_argument(
        "--sink-redis",
        metavar="URL",
        help="give the receivers RECEIVER_SINKS=URL (a stream of "
        "the run's own per store) and check every event is in it (needs redis-py)",
    )
    parser.add_argument(
        "--fault",
        choices=FAULTS,
        help="break the books on purpose (the callback server drops, "
        "duplicates or re-ids the first callback; or the books lose one webhook): the run must be VOID",
    )
    parser.add_argument("--markdown", type=Path, help="also write the summary as markdown to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (stores, logs, raw books)")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.stores.split(",") if t.strip()]
    if unknown := [t for t in targets if t not in STORES]:
        parser.error(f"unknown store(s) {unknown}; choose from {list(STORES)}")
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
    if args.sink_redis:
        try:
            import redis  # noqa: F401
        except ImportError:
            parser.error("--sink-redis needs redis-py: .venv/bin/pip install redis")
    workdir = Path(tempfile.mkdtemp(prefix="receiver-ledger-"))
    opts = Options(
        args.rate,
        args.seconds,
        args.warmup,
        args.find_max,
        args.step_factor,
        args.step_seconds,
        args.max_rate,
        args.drain_timeout,
        args.settle,
        args.refuse_every,
        args.timeout,
        args.max_connections,
        args.fault,
        args.sink_redis,
        workdir,
    )
    pg_version = None
    if any(t != "sqlite" for t in targets):
        if (problem := benchpg.unavailable()) is not None:
            print(f"PostgreSQL targets skipped: {problem}")
            targets = [t for t in targets if t == "sqlite"]
        else:
            url = benchpg.create_database("ledger_version")
            try:
                pg_version = benchpg.server_version(url)
            finally:
                benchpg.drop_database(url)
    command = "python -m scripts.bench ledger " + " ".join(argv if argv is not None else sys.argv[2:])
    load_start = os.getloadavg()
    print(
        f"ledger: {machine(pg_version)}; load average at start {load_start[0]:.2f} {load_start[1]:.2f} "
        f"{load_start[2]:.2f}; work directory {workdir}",
        flush=True,
    )
    started = time.monotonic()
    steps: list[Step] = []
    callbacks = CallbackProcess(args.fault if args.fault in CALLBACK_FAULTS else None)
    try:
        for target in targets:
            steps += run_target(opts, target, callbacks)
    finally:
        callbacks.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load_end = os.getloadavg()
    text, markdown = summary(steps, args.find_max)
    void = [s for s in steps if not s.ledger.balanced]
    about = (
        f"{machine(pg_version)}; load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end; "
        f"`{command.strip()}` took {time.monotonic() - started:.0f} s"
    )
    print("\n" + text + "\n\n" + about)
    if args.markdown:
        args.markdown.write_text(about + "\n\n" + markdown)
    if void:
        print(
            f"\nVOID: {len(void)} run(s) whose ledger does not balance: "
            + "; ".join(f"{s.target} {s.label} {s.rate:,.0f}/s: {s.ledger.violations[0]}" for s in void)
        )
        return 1
    print("\nevery ledger balanced")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
