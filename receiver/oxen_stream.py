"""Oxen SSE consumer (issue 3). Placeholder: being written."""

from __future__ import annotations

from receiver.runtime import Runtime


async def run_oxen_consumer(runtime: Runtime) -> None:
    return None
