from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver.app import create_app
from tests.fakes.oxen import FakeOxen
from tests.support import (
    POSTGRES_REQUIRED,
    RunningServer,
    make_settings,
    postgres_database,
    postgres_reachable,
    serve_app,
)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The receiver on a real uvicorn server with a fresh SQLite file and default settings."""
    async with serve_app(create_app(make_settings(tmp_path))) as running:
        yield running


@pytest.fixture
async def fake_oxen() -> AsyncIterator[FakeOxen]:
    """A fake Oxen server on loopback."""
    fake = FakeOxen()
    async with serve_app(fake.app) as server:
        fake.base_url = server.base_url
        yield fake
        fake.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test (dropped after). Skips, saying why, when no server answers,
    unless RECEIVER_REQUIRE_POSTGRES=1 (CI), where that fails the test."""
    problem = await postgres_reachable()
    if problem is not None:
        if POSTGRES_REQUIRED:
            pytest.fail(problem)
        pytest.skip(problem)
    async with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each backend: the same test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'receiver.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def errors_logged(caplog: pytest.LogCaptureFixture) -> AsyncIterator[pytest.LogCaptureFixture]:
    """caplog, also fed by uvicorn's error logger (which does not propagate to the root logger)."""
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn_error.removeHandler(caplog.handler)
