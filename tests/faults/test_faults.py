"""Bounded runs of the fault-injection scenarios (`python -m scripts.faults` runs them bigger): ~80 s in all.

Each scenario checks its own invariants and lists what did not hold in `report.problems`; the figures
are printed with any failure. Counts that depend on timing are only asserted as lower bounds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.crash import sigkill_under_load
from tests.faults.fuzz import fuzz
from tests.faults.nginx_rolling import nginx_binary, reset_on_reuse, rolling_restart_behind_nginx
from tests.faults.outage import callback_outage
from tests.faults.own_cluster import unavailable as own_cluster_unavailable
from tests.faults.oxen_drops import oxen_drops
from tests.faults.replicas import replicas_under_faults
from tests.support import POSTGRES_REQUIRED, postgres_reachable

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


async def test_replicas_on_postgres_lose_nothing_through_kills_and_a_database_restart(tmp_path: Path) -> None:
    """3 replicas on a PostgreSQL cluster of the test's own; SIGKILLs and one restart of that cluster."""
    problem = own_cluster_unavailable()
    if problem is not None:
        if POSTGRES_REQUIRED:
            pytest.fail(problem)
        pytest.skip(problem)
    report = await replicas_under_faults(
        tmp_path,
        senders=6,
        duration_s=12.0,
        kills=2,
        oxen_jobs=60,
        failovers=1,
        restart_postgres=True,
        settle_s=60,
        seed=7,
    )
    assert report.ok, report.text()
    figures = report.figures
    assert figures["webhooks acknowledged (2xx)"] >= 50, report.text()
    assert figures["kills"] == 2 and figures["refused (replica down)"] > 0, report.text()
    assert figures["acknowledged but missing from the store"] == 0 and figures["jobs never called back"] == 0
    assert figures["called back under two webhook-ids (jobs)"] == 0 and figures["Oxen completions missed"] == 0
    assert figures["  fired while no replica held the stream (lost by Oxen)"] >= 6, report.text()
    assert isinstance(figures["PostgreSQL back → every replica ready, s"], float), report.text()


def need_nginx() -> None:
    if nginx_binary() is None:
        if os.environ.get("RECEIVER_REQUIRE_NGINX") == "1":
            pytest.fail("nginx is not installed")
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")


async def test_nginx_retries_a_webhook_whose_kept_alive_connection_is_reset(tmp_path: Path) -> None:
    """The failure behind a 502 per restart, made deterministic: an upstream that resets a kept-alive
    connection when nginx reuses it. With nginx's defaults the webhook comes back 502; with docs/deploy.md's
    configuration it is sent to the next replica and acknowledged."""
    need_nginx()
    (tmp_path / "naive").mkdir()
    (tmp_path / "rolling").mkdir()
    naive = await reset_on_reuse(tmp_path / "naive", "naive")
    assert naive.figures["resets on reuse"] >= 1 and naive.figures["errors"] >= 1, naive.text()
    rolling = await reset_on_reuse(tmp_path / "rolling", "rolling")
    assert rolling.ok and rolling.figures["resets on reuse"] >= 1, rolling.text()


async def test_rolling_restart_behind_nginx_costs_no_webhook(tmp_path: Path) -> None:
    """3 replicas on PostgreSQL behind nginx (docs/deploy.md's configuration), each SIGTERMed and restarted in
    turn under a steady webhook rate: every webhook is acknowledged on its first attempt and stored."""
    problem = await postgres_reachable()
    if problem is not None:
        if POSTGRES_REQUIRED:
            pytest.fail(problem)
        pytest.skip(problem)
    need_nginx()
    report = await rolling_restart_behind_nginx(tmp_path, rate=60.0, rounds=1, gap_s=1.0)
    assert report.ok, report.text()
    figures = report.figures
    assert figures["restarts"] == 3 and figures["acknowledged (2xx)"] >= 100, report.text()
    assert figures["acknowledged (2xx)"] == figures["webhooks sent"], report.text()
