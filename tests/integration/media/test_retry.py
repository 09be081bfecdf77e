"""An output whose mirror keeps failing shows it while it is retried (and says so once in the log)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.callback import callback_server
from tests.fakes.origin import media_origin
from tests.integration.media.support import FAST, callback_for, deliver, mirroring_receiver
from tests.support import eventually

# Retries a few tenths of a second apart, for long enough that the job is seen while they go on.
PATIENT = dataclasses.replace(FAST, retry_for_s=60.0, first_retry_s=0.3, max_retry_s=0.3)


async def test_a_retried_output_shows_its_last_failure_and_is_logged_once(
    tmp_path: Path,
    store_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(
            tmp_path, callback, mirror_tuning=PATIENT, database_url=store_url, media_url=str(tmp_path / "media")
        ) as server,
    ):
        caplog.set_level(logging.INFO, logger="receiver.media.mirror")
        job_id = await deliver(server, "px-retry", origin.url("/flaky/6"), origin.url("/img/1000"))

        async with server.api() as api:

            async def retrying() -> dict[str, Any] | None:
                job: dict[str, Any] = (await api.get(f"/v1/jobs/{job_id}")).json()
                error = job["outputs"][0]["mirror_error"] or ""
                return job if "answered 503" in error and "being retried" in error else None

            job = await eventually(retrying, 20, "the job to show the retry")
        assert job["status"] == "succeeded" and job["outputs"][0]["stored_url"] is None
        flaky = (await callback_for(callback, job_id))["data"]["outputs"][0]
        assert flaky["mirror_error"] is None and flaky["bytes"] == 2000  # cleared once stored
        assert origin.hits["/flaky/6"] == 7
    lines = [r.getMessage() for r in caplog.records if r.name == "receiver.media.mirror" and job_id in r.getMessage()]
    retried = [line for line in lines if "retrying" in line]
    assert len(retried) == 1 and "answered 503" in retried[0], lines  # six failures, one line
    assert any("stored after 7 attempts" in line for line in lines), lines


# A trickling origin would hold each fetch for its full minute.
SLOW = dataclasses.replace(FAST, attempt_timeout_s=60.0, read_timeout_s=10.0, retry_for_s=120.0)


async def test_a_trickling_origin_delays_only_its_own_jobs(tmp_path: Path, store_url: str) -> None:
    async with (
        media_origin() as slow,
        media_origin() as fast,
        callback_server() as callback,
        mirroring_receiver(
            tmp_path, callback, mirror_tuning=SLOW, database_url=store_url, media_url=str(tmp_path / "media")
        ) as server,
    ):
        # More trickling outputs than the replica fetches at once: before, they took every slot.
        trickling = await deliver(server, "px-cdn", *(slow.url(f"/trickle?{i}") for i in range(SLOW.concurrency + 4)))
        await eventually(lambda: sum(slow.hits.values()) >= SLOW.per_origin_concurrency, 20, "the trickles to start")
        other = await deliver(server, "px-other", fast.url("/img/1000-x"), fast.url("/img/2000-y"))
        outputs = (await callback_for(callback, other))["data"]["outputs"]
        assert [o["bytes"] for o in outputs] == [1000, 2000] and all(o["stored_url"] for o in outputs)
        # Called back while the trickling job's outputs are still being fetched, a share at a time.
        assert sum(slow.hits.values()) == SLOW.per_origin_concurrency
        async with server.api() as api:
            job = (await api.get(f"/v1/jobs/{trickling}")).json()
        assert all(o["stored_url"] is None for o in job["outputs"])
        assert all(json_body(r)["data"]["id"] != trickling for r in callback.requests)


def json_body(request: Any) -> dict[str, Any]:
    import json

    body: dict[str, Any] = json.loads(request.body)
    return body
