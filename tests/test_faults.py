"""Bounded runs of the fault-injection scenarios (`scripts/faults.py` runs them bigger): ~25 s in all.

Each scenario checks its own invariants and lists what did not hold in `report.problems`; the figures
are printed with any failure. Counts that depend on timing are only asserted as lower bounds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.crash import sigkill_under_load
from tests.faults.fuzz import fuzz
from tests.faults.outage import callback_outage
from tests.faults.oxen_drops import oxen_drops

pytestmark = pytest.mark.slow


async def test_sigkill_under_webhook_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    report = await sigkill_under_load(tmp_path, kills=4, senders=6, uptime_s=(0.3, 0.8), settle_s=30, seed=7)
    assert report.ok, report.text()
    figures = report.figures
    assert figures["kills (SIGKILL)"] == 4
    assert figures["webhooks acknowledged (2xx)"] >= 20, report.text()
    assert figures["refused while down"] > 0, report.text()  # the load did run into the kills
    assert figures["jobs called back"] == figures["webhooks acknowledged (2xx)"] == figures["jobs in the store"]
    assert figures["duplicate callbacks, another webhook-id (jobs)"] == 0


async def test_callback_endpoint_down_then_back_delivers_everything_once(tmp_path: Path) -> None:
    report = await callback_outage(tmp_path, jobs=45, refused_s=1.0, failing_s=1.0, settle_s=30, seed=7)
    assert report.ok, report.text()
    figures = report.figures
    assert figures["attempts, connection refused"] > 0 and figures["attempts, 503"] > 0, report.text()
    assert figures["attempts, 2xx"] == figures["delivered"] == 45 and figures["failed"] == 0
    assert figures["metric deliveries delivered"] == 45


async def test_oxen_stream_drops_lose_no_completion(tmp_path: Path) -> None:
    report = await oxen_drops(tmp_path, generations=60, duration_s=2.0, drop_every_s=(0.1, 0.4), settle_s=20, seed=7)
    assert report.ok, report.text()
    figures = report.figures
    assert figures["completions fired"] == 60 and figures["jobs not finished"] == 0
    assert sum(figures["stream faults injected"].values()) >= 3, report.text()
    assert figures["streams opened"] >= 2, report.text()
    assert figures["applied from the stream"] + figures["applied by the catch-up poll"] == 60, report.text()


def test_fuzzing_finds_no_5xx_and_keeps_receipts_consistent(tmp_path: Path) -> None:
    report = fuzz(tmp_path, examples=150, derandomize=True)
    assert report.ok, report.text()
    figures = report.figures
    assert figures["stored webhook receipts"] >= 20, report.text()
    assert figures.get("  invalid", 0) >= 5 and figures.get("  applied", 0) >= 1, report.text()
