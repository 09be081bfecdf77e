"""Polls pending jobs at their providers (issue 5). Placeholder: being written."""

from __future__ import annotations

from receiver.runtime import Runtime


async def run_reconciler(runtime: Runtime) -> None:
    return None
