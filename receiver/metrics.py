"""Prometheus metrics, one registry per app (no process-global state)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from receiver.models import AttemptOutcome, JobStatus, MirrorOutcome, Outcome, StreamState
from receiver.providers import WEBHOOK_PROVIDERS
from receiver.store import Store

CONTENT_TYPE = CONTENT_TYPE_LATEST
JOB_COUNTS_TTL_S = 5.0  # /metrics is unauthenticated: scrapers may not cost a GROUP BY each


class Metrics:
    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, job_counts_ttl_s: float = JOB_COUNTS_TTL_S
    ) -> None:
        self.clock = clock
        self.job_counts_ttl_s = job_counts_ttl_s
        self._job_counts: dict[str, int] | None = None
        self._job_counts_at = 0.0
        self._job_counts_lock = asyncio.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.receipts = Counter(
            "receiver_receipts",
            "Inbound webhooks and stream messages stored, by outcome",
            ["provider", "source", "outcome"],
            registry=r,
        )
        self._receipt_series: dict[tuple[str, str, str], Counter] = {}
        self.webhooks_rejected = Counter(
            "receiver_webhooks_rejected",
            "Webhooks refused before anything was stored (provider 'unknown' for 404)",
            ["provider", "reason"],
            registry=r,
        )
        self.refusals_recorded = Counter(
            "receiver_refusals_recorded", "Refused inbound requests kept for the inspector", registry=r
        )
        self.refusals_dropped = Counter(
            "receiver_refusals_dropped",
            "Refused inbound requests not kept (queue full under a flood, or store down)",
            registry=r,
        )
        self.stream_connected = Gauge(
            "receiver_oxen_stream_connected", "1 while the Oxen stream is connected", registry=r
        )
        self.stream_state = Gauge(
            "receiver_oxen_stream_state",
            "1 for the Oxen consumer's current state (as /readyz says)",
            ["state"],
            registry=r,
        )
        self.stream_reconnects = Counter(
            "receiver_oxen_stream_reconnects", "Oxen stream (re)connect attempts", registry=r
        )
        self.deliveries = Counter("receiver_deliveries", "Callback attempts by outcome", ["outcome"], registry=r)
        self.reconcile_polls = Counter(
            "receiver_reconcile_polls", "Status polls at providers", ["provider", "result"], registry=r
        )
        self.submissions = Counter(
            "receiver_submissions", "Generations submitted to providers, by result", ["provider", "result"], registry=r
        )
        self.mirrors = Counter(
            "receiver_media_mirrors",
            "Output mirror attempts by outcome (stored, gave_up, retry)",
            ["outcome"],
            registry=r,
        )
        self.jobs = Gauge("receiver_jobs", "Jobs in the store by status", ["status"], registry=r)
        self.queue_depth = Gauge(
            "receiver_delivery_queue_depth", "Callback messages waiting to be delivered", registry=r
        )
        self.oldest_pending_age = Gauge(
            "receiver_delivery_oldest_pending_age_seconds", "Age of the oldest undelivered callback message", registry=r
        )
        self.sink_lag = Gauge(
            "receiver_sink_lag_events", "Events not yet acknowledged by the sink's broker", ["sink"], registry=r
        )
        self.sink_published = Counter(
            "receiver_sink_published",
            "Events published to the sink by this replica (acknowledged by its broker)",
            ["sink"],
            registry=r,
        )
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, …
        # Series that exist from the start, at 0, so that rate() and alerts see them before the first event.
        for outcome in get_args(AttemptOutcome):
            self.deliveries.labels(outcome)
        for outcome in get_args(MirrorOutcome):
            self.mirrors.labels(outcome)
        for provider in WEBHOOK_PROVIDERS:
            for outcome in Outcome:
                self.receipts.labels(provider, "webhook", outcome.value)

    def count_receipt(self, provider: str, source: str, outcome: str) -> None:
        """One more stored receipt; each series looked up once (`labels()` takes a lock and checks its
        arguments on every call, on the path of every webhook)."""
        key = (provider, source, outcome)
        series = self._receipt_series.get(key)
        if series is None:
            series = self._receipt_series[key] = self.receipts.labels(provider, source, outcome)
        series.inc()

    async def render(self, store: Store, *, stream_state: StreamState | None = None) -> bytes:
        """Refresh the store-derived gauges (and the stream state, if given), then render the text format."""
        if stream_state is not None:
            for state in get_args(StreamState):
                self.stream_state.labels(state).set(1 if state == stream_state else 0)
        counts = await self._counts(store)
        for status in JobStatus:
            self.jobs.labels(status.value).set(counts.get(status.value, 0))
        depth, oldest = await store.delivery_backlog()
        self.queue_depth.set(depth)
        self.oldest_pending_age.set(max(0.0, store.clock() - oldest) if oldest is not None else 0)
        return generate_latest(self.registry)

    async def _counts(self, store: Store) -> dict[str, int]:
        """Jobs by status, recomputed at most every `job_counts_ttl_s`; concurrent scrapes share one query."""
        async with self._job_counts_lock:
            if self._job_counts is None or self.clock() - self._job_counts_at >= self.job_counts_ttl_s:
                self._job_counts = dict(await store.job_counts())
                self._job_counts_at = self.clock()
            return self._job_counts
