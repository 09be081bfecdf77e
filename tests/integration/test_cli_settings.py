"""Settings as `serve` and `info` read them: unknown RECEIVER_ variables reported, bad values one line and
exit 2; what `info` warns about; `--version`; `GET /`; the inspector line at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from receiver import __version__
from receiver.app import create_app
from tests.support import ReceiverProcess, make_settings, process_env, serve_app


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "DATABASE_URL"))}
    env.update(process_env(tmp_path, **extra))
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("RECEIVER_LOG_LEVEL", "LOUD", "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("RECEIVER_LOG_FORMAT", "xml", "'text' or 'json'"),
        ("RECEIVER_SIGNING_SECRET", "not-a-whsec-secret", "whsec_"),
        ("RECEIVER_SIGNING_SECRET", "whsec_!!notbase64!!", "base64"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "info"])
def test_a_bad_value_stops_serve_and_info_with_one_line(
    tmp_path: Path, command: str, variable: str, value: str, says: str
) -> None:
    result = run([command, "--port", "1"], clean_env(tmp_path, **{variable: value}), tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
    assert variable in result.stderr and says in result.stderr and "Traceback" not in result.stderr
    assert "notbase64" not in result.stderr  # a secret's value is never repeated
    assert not (tmp_path / "receiver.db").exists()


def test_serve_reports_unknown_variables_and_says_where_the_inspector_is(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path,
        RECEIVER_RETRY_SCHEDUL="1,2",
        RECEIVER_TEST_POSTGRES_URL="postgresql://x",
        RECEIVER_REQUIRE_POSTGRES="1",
    )
    proc = ReceiverProcess(env, cwd=tmp_path).start()
    try:
        first = httpx.get(f"{proc.base_url}/", follow_redirects=False)
        assert first.status_code in (302, 307) and first.headers["location"] == "/ui/"
        assert httpx.get(f"{proc.base_url}/", follow_redirects=True).status_code == 200
        out = proc.output()
    finally:
        proc.stop()
    [line] = [line for line in out.splitlines() if "RECEIVER_RETRY_SCHEDUL " in line]
    assert "WARNING" in line and "did you mean RECEIVER_RETRY_SCHEDULE?" in line
    assert "RECEIVER_TEST_POSTGRES_URL" not in out and "RECEIVER_REQUIRE_POSTGRES" not in out  # the tests' own
    assert f"inspector: http://127.0.0.1:{proc.port}/ui/" in out and "`receiver info`" in out


def _stored(tmp_path: Path, env: dict[str, str]) -> None:
    """A store in tmp_path, as a first `serve` leaves it."""
    ReceiverProcess(env, cwd=tmp_path).start().stop()


def test_info_warns_on_stderr(tmp_path: Path) -> None:
    env = clean_env(tmp_path, RECEIVER_WEBHOOK_TOKN="x")
    _stored(tmp_path, env)
    local = run(["info"], env, tmp_path)
    assert local.returncode == 0, local.stderr
    assert "RECEIVER_WEBHOOK_TOKN is not a setting" in local.stderr and "RECEIVER_WEBHOOK_TOKEN" in local.stderr
    assert "RECEIVER_PUBLIC_URL is not set" in local.stderr and "only from this machine" in local.stderr
    assert "http://127.0.0.1:8000/webhooks/pixazo?token=" in local.stdout  # stdout stays the plain answer

    public = run(["info"], {**env, "RECEIVER_PUBLIC_URL": "https://hooks.example.com"}, tmp_path)
    assert public.returncode == 0 and "RECEIVER_PUBLIC_URL" not in public.stderr
    lines = public.stdout.splitlines()
    # Lumenfall's URL comes with the truth about it: images are synchronous, the URL is for video callbacks.
    at = next(i for i, line in enumerate(lines) if "https://hooks.example.com/webhooks/lumenfall?token=" in line)
    note = " ".join(lines[at - 3 : at])
    assert "lumenfall" in note and "synchronously" in note and "video" in note
    for provider in ("pixazo", "runware", "apiframe"):
        assert any(f"webhooks/{provider}?token=" in line and line.split()[0] == provider for line in lines)


def test_info_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    env = clean_env(tmp_path, RECEIVER_PUBLIC_URL="https://hooks.example.com")
    _stored(tmp_path, env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "receiver", "info"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head -2` does once it has its lines (here before any)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_version(tmp_path: Path) -> None:
    result = run(["--version"], clean_env(tmp_path), tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"receiver {__version__}"


async def test_home_redirects_to_the_inspector(tmp_path: Path) -> None:
    async with serve_app(create_app(make_settings(tmp_path))) as server, server.client() as client:
        reply = await client.get("/")
        assert reply.status_code == 307 and reply.headers["location"] == "/ui/"
        assert (await client.get("/", follow_redirects=True)).status_code == 200
        assert (await client.head("/")).status_code == 307
