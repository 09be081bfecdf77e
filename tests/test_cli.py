"""The console script as a user runs it: `receiver info`, `receiver serve`, settings errors, shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import API_TOKEN, ReceiverProcess, process_env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "receiver", *args], env={**os.environ, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_info_uses_public_url_and_defaults_to_receiver_db(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    env["RECEIVER_PUBLIC_URL"] = "https://abc.tunnel.example/"
    result = subprocess.run([sys.executable, "-m", "receiver", "info"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "receiver.db").exists()  # with no settings: ./receiver.db
    for provider in ("pixazo", "runware", "apiframe", "lumenfall"):
        assert f"https://abc.tunnel.example/webhooks/{provider}?token=" in result.stdout


def test_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    result = run(["info"], {"RECEIVER_RETRY_SCHEDULE": "5,soon"}, tmp_path)
    assert result.returncode != 0 and "RECEIVER_RETRY_SCHEDULE" in result.stderr
    result = run(["info"], {"RECEIVER_DATABASE_URL": "mysql://x"}, tmp_path)
    assert result.returncode == 2 and "RECEIVER_DATABASE_URL" in result.stderr or "scheme" in result.stderr


def test_flags_win_over_environment(tmp_path: Path) -> None:
    proc = ReceiverProcess(process_env(tmp_path, RECEIVER_PORT="1")).start()  # --port given by the runner
    try:
        assert httpx.get(f"{proc.base_url}/healthz").status_code == 200
    finally:
        proc.stop()


def test_sigterm_ends_open_event_streams_promptly(tmp_path: Path) -> None:
    proc = ReceiverProcess(process_env(tmp_path)).start()
    with httpx.stream("GET", f"{proc.base_url}/v1/events", headers={"Authorization": f"Bearer {API_TOKEN}"},
                      timeout=10) as stream:
        assert stream.status_code == 200
        started = time.monotonic()
        code = proc.stop()
        elapsed = time.monotonic() - started
    # uvicorn re-raises the captured SIGTERM after a graceful shutdown, so the status is -15.
    assert code in (0, -15)
    assert "Application shutdown complete" in proc.output()
    assert elapsed < 3, f"shutdown took {elapsed:.1f}s with an event stream open"
