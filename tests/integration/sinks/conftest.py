from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.sinks.brokers import TestBroker, require


@pytest.fixture(params=["nats", "redis", "amqp"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[TestBroker]:
    """A stream/subject/exchange of this test's own on each broker, deleted afterwards."""
    await require(request.param)
    made = TestBroker(request.param)
    await made.setup()
    try:
        yield made
    finally:
        await made.cleanup()
