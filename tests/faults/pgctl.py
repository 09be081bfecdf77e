"""The local PostgreSQL cluster the tests use (127.0.0.1:5432): restart it, wait for it, keep it up.

Restarting needs the Debian cluster tools (`pg_ctlcluster`) and the right to run them (root, or the
postgres user); `restart_possible()` says whether this machine allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import AsyncIterator

CLUSTERS = Path("/etc/postgresql")


def cluster_version() -> str | None:
    """The newest installed cluster version (`ls /etc/postgresql`), or None."""
    try:
        versions = [p.name for p in CLUSTERS.iterdir() if (p / "main").is_dir()]
    except OSError:
        return None
    return max(versions, key=lambda v: [int(x) if x.isdigit() else 0 for x in v.split(".")], default=None)


def restart_possible() -> str | None:
    """None when this process can restart the local cluster, else why not."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_isready") is None:
        return "pg_ctlcluster/pg_isready not installed"
    if cluster_version() is None:
        return f"no cluster under {CLUSTERS}"
    if os.geteuid() != 0:
        return "restarting PostgreSQL needs root"
    return None


async def _run(*args: str, timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{args[0]} timed out after {timeout} s"
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def ready(timeout: float = 60.0) -> bool:
    """Until `pg_isready` says the server accepts connections (True), or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        code, _ = await _run("pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432", timeout=5)
        if code == 0:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


async def restart() -> float:
    """`pg_ctlcluster … restart` (fast shutdown: every connection is cut); the seconds until it answers again."""
    version = cluster_version()
    assert version is not None, "no PostgreSQL cluster"
    started = time.monotonic()
    code, out = await _run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", timeout=120)
    if code != 0:
        raise RuntimeError(f"pg_ctlcluster restart failed ({code}): {out[-500:]}")
    if not await ready(60):
        raise RuntimeError("PostgreSQL did not accept connections within 60 s of its restart")
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def kept_up() -> AsyncIterator[None]:
    """Whatever happens inside, PostgreSQL runs and accepts connections afterwards."""
    try:
        yield
    finally:
        if not await ready(5):
            version = cluster_version()
            if version is not None:
                await _run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start", timeout=120)
            if not await ready(60):
                raise RuntimeError("PostgreSQL is down and did not come back")
