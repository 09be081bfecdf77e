"""The rules every store runs (`receiver.store.rules`), in plain Python: no database, no I/O."""

from __future__ import annotations

import json
import os
import re

import pytest

from receiver.models import Completion, DeliveryStatus, JobStatus, Outcome, Output, Receipt
from receiver.store.rules import Entropy, UnitOfWork, sortable_id

NOW = 1_800_000_000.0
HOOK = "https://hooks.test/done"


def unit(*, default_callback_url: str | None = None, mirroring: bool = False, now: float = NOW) -> UnitOfWork:
    return UnitOfWork(now=now, reconcile_after_s=300, default_callback_url=default_callback_url, mirroring=mirroring)


def receipt(provider: str = "pixazo") -> Receipt:
    return Receipt(
        provider=provider, source="webhook", body=b"{}", headers={"authorization": "Bearer x", "user-agent": "t"}
    )


def done(pid: str, *urls: str, provider: str = "pixazo", partial: bool = False) -> Completion:
    return Completion(provider, pid, JobStatus.SUCCEEDED, outputs=tuple(Output(url=u) for u in urls), partial=partial)


def test_a_completion_for_an_unknown_job_creates_it_finished_with_its_event() -> None:
    u = unit(default_callback_url=HOOK)
    result = u.apply_receipt(receipt(), [done("r1", "https://cdn.test/1.png")], None)
    assert result.outcome is Outcome.APPLIED and result.terminal_job_ids == result.job_ids
    w = u.writes()
    (tracked,) = w.new_jobs
    job = tracked.job
    assert job.status is JobStatus.SUCCEEDED and not job.registered and job.delivery_status is DeliveryStatus.PENDING
    assert [e.type for e in w.events] == ["job.succeeded"] and json.loads(w.events[0].data)["id"] == job.id
    assert [(m.job_id, m.url) for m in w.messages] == [(job.id, HOOK)]
    assert w.receipts[0].headers == {"user-agent": "t"}  # credentials are never kept


def test_a_registration_claims_a_completion_that_came_first_and_sends_it_to_its_callback() -> None:
    first = unit()
    first.apply_receipt(receipt(), [done("r1", "https://cdn.test/1.png")], None)
    job = first.writes().new_jobs[0].job
    later = unit()
    later.track(job)
    claimed, created = later.register("pixazo", "r1", callback_url=HOOK, metadata={"k": 1}, expected_outputs=None)
    assert not created and claimed.id == job.id and claimed.registered and claimed.metadata == {"k": 1}
    w = later.writes()
    assert not w.new_jobs and [t.job.id for t in w.changed_jobs] == [job.id]
    assert [m.url for m in w.messages] == [HOOK] and not w.events  # its event went out when it finished


def test_the_same_completion_twice_is_a_duplicate_and_a_terminal_job_never_changes() -> None:
    u = unit()
    u.apply_receipt(receipt(), [done("r1", "https://cdn.test/1.png")], None)
    again = u.apply_receipt(receipt(), [done("r1", "https://cdn.test/1.png")], None)
    failed = u.apply_receipt(receipt(), [Completion("pixazo", "r1", JobStatus.FAILED, error="late")], None)
    assert again.outcome is Outcome.DUPLICATE and failed.outcome is Outcome.DUPLICATE
    job = u.job("pixazo", "r1")
    assert job is not None and job.status is JobStatus.SUCCEEDED and job.error is None
    assert len(u.writes().events) == 1


def test_progress_is_kept_as_a_receipt_but_creates_no_job() -> None:
    u = unit()
    result = u.apply_receipt(receipt(), [Completion("pixazo", "r1", JobStatus.PENDING)], None)
    assert result.outcome is Outcome.IGNORED and result.job_ids == []
    w = u.writes()
    assert not w.new_jobs and [r.outcome for r in w.receipts] == [Outcome.IGNORED]


def test_a_body_the_adapter_refused_is_kept_as_an_invalid_receipt() -> None:
    u = unit()
    result = u.apply_receipt(receipt(), None, "body is not JSON")
    assert result.outcome is Outcome.INVALID and result.error == "body is not JSON"
    w = u.writes()
    assert not w.new_jobs and [(r.outcome, r.error) for r in w.receipts] == [(Outcome.INVALID, "body is not JSON")]


def test_runware_images_are_collected_until_the_expected_count() -> None:
    u = unit()
    u.register("runware", "t1", callback_url=None, metadata={}, expected_outputs=2)
    first = u.apply_receipt(
        receipt("runware"), [done("t1", "https://im.test/a.png", provider="runware", partial=True)], None
    )
    same = u.apply_receipt(
        receipt("runware"), [done("t1", "https://im.test/a.png", provider="runware", partial=True)], None
    )
    second = u.apply_receipt(
        receipt("runware"), [done("t1", "https://im.test/b.png", provider="runware", partial=True)], None
    )
    assert (first.outcome, first.terminal_job_ids) == (Outcome.APPLIED, [])
    assert same.outcome is Outcome.DUPLICATE
    assert second.terminal_job_ids == second.job_ids
    job = u.job("runware", "t1")
    assert (
        job is not None
        and job.status is JobStatus.SUCCEEDED
        and [o.url for o in job.outputs] == ["https://im.test/a.png", "https://im.test/b.png"]
    )


def test_with_mirroring_a_succeeded_job_waits_for_its_mirror_before_its_event() -> None:
    u = unit(default_callback_url=HOOK, mirroring=True)
    result = u.apply_receipt(receipt(), [done("r1", "https://cdn.test/1.png")], None)
    w = u.writes()
    assert result.terminal_job_ids and not w.events and not w.messages
    assert [(t.index, t.url) for t in w.mirror_tasks] == [(0, "https://cdn.test/1.png")]


@pytest.mark.parametrize("prefix", ["job", "msg"])
def test_ids_have_one_shape_and_sort_by_the_time_they_were_made(prefix: str) -> None:
    made = [sortable_id(prefix, NOW + step, os.urandom(10)) for step in (0.0, 0.001, 0.5, 60.0, 86_400.0)]
    assert all(re.fullmatch(rf"{prefix}_[0-9a-f]{{32}}", i) for i in made)
    assert sorted(made) == made and len(set(made)) == len(made)
    assert (
        len({sortable_id(prefix, NOW, os.urandom(10)) for _ in range(1000)}) == 1000
    )  # the same millisecond: random part


def test_a_units_ids_draw_fresh_randomness_from_one_pool() -> None:
    unit = UnitOfWork(now=NOW, reconcile_after_s=300, default_callback_url=None)
    made = [unit.new_id("job") for _ in range(3 * Entropy.BLOCK // 10 + 7)]  # past several refills
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"job_[0-9a-f]{32}", i) and i[4:16] == made[0][4:16] for i in made)


def test_entropy_never_hands_out_the_same_bytes_twice() -> None:
    pool = Entropy()
    taken = [pool.take(10) for _ in range(200)] + [pool.take(Entropy.BLOCK + 5)]
    assert [len(t) for t in taken] == [10] * 200 + [Entropy.BLOCK + 5]
    assert len(set(taken)) == len(taken)
