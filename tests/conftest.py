from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import pytest

from receiver.app import create_app
from tests.support import RunningServer, serve_app, make_settings


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The receiver on a real uvicorn server with a fresh SQLite file and default settings."""
    async with serve_app(create_app(make_settings(tmp_path))) as running:
        yield running
