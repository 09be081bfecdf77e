"""Prometheus metrics, one registry per app (no process-global state)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from receiver.store import Store

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.receipts = Counter(
            "receiver_receipts", "Inbound webhooks and stream messages stored, by outcome",
            ["provider", "source", "outcome"], registry=r,
        )
        self.stream_connected = Gauge("receiver_oxen_stream_connected", "1 while the Oxen stream is connected", registry=r)
        self.stream_reconnects = Counter("receiver_oxen_stream_reconnects", "Oxen stream (re)connect attempts", registry=r)
        self.deliveries = Counter("receiver_deliveries", "Callback attempts by outcome", ["outcome"], registry=r)
        self.reconcile_polls = Counter(
            "receiver_reconcile_polls", "Status polls at providers", ["provider", "result"], registry=r
        )
        self.submissions = Counter(
            "receiver_submissions", "Generations submitted to providers, by result", ["provider", "result"], registry=r
        )
        self.jobs = Gauge("receiver_jobs", "Jobs in the store by status", ["status"], registry=r)
        self.queue_depth = Gauge("receiver_delivery_queue_depth", "Callback messages waiting to be delivered", registry=r)
        self.oldest_pending_age = Gauge(
            "receiver_delivery_oldest_pending_age_seconds", "Age of the oldest undelivered callback message", registry=r
        )

    async def render(self, store: Store) -> bytes:
        """Refresh the store-derived gauges, then render the text format."""
        counts = await store.job_counts()
        for status in ("pending", "succeeded", "failed", "cancelled"):
            self.jobs.labels(status).set(counts.get(status, 0))
        depth, oldest = await store.delivery_backlog()
        self.queue_depth.set(depth)
        self.oldest_pending_age.set(max(0.0, time.time() - oldest) if oldest is not None else 0)
        return generate_latest(self.registry)
