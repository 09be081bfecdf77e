"""The workers' timing knobs live in receiver.tuning, once each, and agree with one another."""

from __future__ import annotations

import ast
from pathlib import Path

import receiver
from receiver import tuning

PACKAGE = Path(receiver.__file__).parent

# Durations that are not a worker's knob: the stores' own bounds (SQL leases, lock and checkpoint waits,
# the PostgreSQL session's bounds) and the bounds of a request the API documents.
NOT_KNOBS = {
    "receiver/store/postgres/store.py": {
        "ACQUIRE_TIMEOUT_S",
        "IDLE_IN_TRANSACTION_S",
        "LOCK_TIMEOUT_S",
        "COMMAND_TIMEOUT_S",
        "READY_TIMEOUT_S",
    },
    "receiver/store/postgres/work.py": {"MESSAGE_LEASE_S"},
    "receiver/store/sqlite/file.py": {"CHECKPOINT_EVERY_S", "WAL_LOOK_S", "BUSY_WAIT_S"},
    "receiver/api/jobs.py": {"MAX_WAIT_S"},
    "receiver/media/objects.py": {"PRESIGN_S"},
    "receiver/metrics.py": {"JOB_COUNTS_TTL_S"},
    "receiver/api/idempotency.py": {"WAIT_STEP_S"},
    "receiver/models.py": {"IDEMPOTENCY_TTL_S"},  # the contract's, not a worker's
}


def _module_durations(path: Path) -> set[str]:
    """Names of module-level `NAME_S = <number expression>` assignments."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if value is None or not all(
            isinstance(n, (ast.Constant, ast.BinOp)) for n in ast.walk(value) if not isinstance(n, ast.operator)
        ):
            continue
        names |= {t.id for t in targets if isinstance(t, ast.Name) and t.id.endswith("_S")}
    return names


def test_timing_knobs_are_defined_in_tuning_only() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        if relative == "receiver/tuning.py":
            continue
        extra = _module_durations(path) - NOT_KNOBS.get(relative, set())
        if extra:
            found[relative] = sorted(extra)
    assert found == {}, f"timing constants outside receiver/tuning.py: {found}"


def test_not_knobs_list_is_current() -> None:
    """Each exception above still exists, so the list cannot hide a knob that moved."""
    for relative, names in NOT_KNOBS.items():
        assert names <= _module_durations(PACKAGE.parent / relative), relative


def test_knobs_agree() -> None:
    d = tuning.DELIVERY
    assert 0 < d.min_postpone_s <= d.postpone_s <= d.max_postpone_s
    # Several missed heartbeats before a replica is taken for gone.
    assert tuning.REPLICAS.heartbeat_s * 3 <= tuning.REPLICAS.ttl_s
    assert tuning.INGEST.max_poll_interval_s <= tuning.INGEST.poll_lease_s
    assert tuning.HTTP.head_timeout_s <= tuning.HTTP.body_timeout_s
