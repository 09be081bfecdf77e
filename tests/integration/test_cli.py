"""The console script as a user runs it: `receiver info`, `receiver serve`, settings errors, shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import API_TOKEN, ReceiverProcess, process_env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_info_reads_the_servers_store_and_never_creates_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "DATABASE_URL"))}
    env["RECEIVER_PUBLIC_URL"] = "https://abc.tunnel.example/"
    env["RECEIVER_TUNNEL_DISCOVERY"] = "off"
    missing = subprocess.run(
        [sys.executable, "-m", "receiver", "info"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode != 0
    assert str(tmp_path / "receiver.db") in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "receiver.db").exists()  # looked, did not create

    proc = ReceiverProcess({**env, "RECEIVER_DATABASE_URL": "sqlite:///./receiver.db"}, cwd=tmp_path).start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "receiver", "info"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert f"SQLite file {tmp_path / 'receiver.db'}" in result.stdout
        token = next(line.split()[-1] for line in result.stdout.splitlines() if line.startswith("API token"))
        # The token info prints is the one the running server takes.
        assert httpx.get(f"{proc.base_url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        for provider in ("pixazo", "runware", "apiframe", "lumenfall"):
            assert f"https://abc.tunnel.example/webhooks/{provider}?token=" in result.stdout
    finally:
        proc.stop()


def test_second_serve_on_the_same_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    first = ReceiverProcess(process_env(tmp_path)).start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "receiver", "serve", "--port", "1"],
            env={**os.environ, **process_env(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        assert "already serving" in second.stderr and "Traceback" not in second.stderr
        assert httpx.get(f"{first.base_url}/healthz").status_code == 200
    finally:
        first.stop()


def test_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    result = run(["info"], {"RECEIVER_RETRY_SCHEDULE": "5,soon"}, tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "bad setting: RECEIVER_RETRY_SCHEDULE" in result.stderr and "'soon'" in result.stderr
    result = run(["info"], {"RECEIVER_DATABASE_URL": "mysql://x"}, tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # Says which scheme is wrong and which ones work.
    assert "unsupported database URL scheme 'mysql': use sqlite:///… or postgresql://…" in result.stderr


def test_flags_win_over_environment(tmp_path: Path) -> None:
    proc = ReceiverProcess(process_env(tmp_path, RECEIVER_PORT="1")).start()  # --port given by the runner
    try:
        assert httpx.get(f"{proc.base_url}/healthz").status_code == 200
    finally:
        proc.stop()


def test_sigterm_ends_open_event_streams_promptly(tmp_path: Path) -> None:
    proc = ReceiverProcess(process_env(tmp_path)).start()
    with httpx.stream(
        "GET", f"{proc.base_url}/v1/events", headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10
    ) as stream:
        assert stream.status_code == 200
        code = proc.stop()
    # uvicorn re-raises the captured SIGTERM after a graceful shutdown, so the status is -15.
    assert code in (0, -15)
    assert "Application shutdown complete" in proc.output()
    # The stream ended itself at once: uvicorn did not have to wait out its graceful timeout and cancel it.
    assert "timeout graceful shutdown exceeded" not in proc.output()
