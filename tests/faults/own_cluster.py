"""A PostgreSQL cluster of a test's own: initdb in a temporary directory, started on a free port, removed
after. For tests that freeze or stop what holds locks on the server, or that set server settings: the
machine's shared server (127.0.0.1:5432) is never touched by them.

PostgreSQL refuses to run as root: as root the cluster runs as the `postgres` user (`runuser`), and
its directory is that user's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port

SERVER_USER = "postgres"


def binaries() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin), or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.parent.name.split(".")],
    )
    return found[-1].parent if found else None


def unavailable() -> str | None:
    """None when this process can run a cluster of its own, else why not."""
    if binaries() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is not installed"
    return None


async def _run(*args: str, timeout: float = 120) -> str:
    command = ["runuser", "-u", SERVER_USER, "--", *args] if os.geteuid() == 0 else list(args)
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"{args[0]} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {out.decode(errors='replace')[-2000:]}")
    return out.decode(errors="replace")


@dataclass(frozen=True)
class Cluster:
    """A PostgreSQL cluster of the test's own: its URL, and a restart that cuts every connection."""

    url: str
    bin_dir: Path
    data: Path
    root: Path

    async def restart(self) -> float:
        """`pg_ctl restart -m fast` (every connection is cut); the seconds until it accepts connections again."""
        started = time.monotonic()
        # -l again: without it the new server would write to our pipe, which then never reaches its end.
        await _run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "restart",
        )
        return time.monotonic() - started


@contextlib.asynccontextmanager
async def own_cluster() -> AsyncIterator[Cluster]:
    """A fresh cluster (trust auth, user postgres) on 127.0.0.1 and a free port, the test's own to stop and
    restart; stopped (immediate: whatever its clients are doing) and removed afterwards."""
    bin_dir = binaries()
    assert bin_dir is not None, unavailable()
    root = Path(tempfile.mkdtemp(prefix="receiver-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", free_port()
    started = False
    try:
        await _run(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        await _run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            "start",
        )
        started = True
        yield Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", bin_dir, data, root)
    finally:
        if started:
            with contextlib.suppress(RuntimeError):
                await _run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(root, ignore_errors=True)
