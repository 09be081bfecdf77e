"""Outbound callback delivery worker (issue 4). Placeholder: being written."""

from __future__ import annotations

from receiver.runtime import Runtime


async def run_delivery(runtime: Runtime) -> None:
    return None
