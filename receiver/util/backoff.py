"""Backoff as pure functions: the caller passes the randomness, so tests can pin it. And `Retry-After`,
read one way for every answer that carries it (callbacks, Oxen's stream)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from datetime import UTC
from email.utils import parsedate_to_datetime

Random = Callable[[], float]


def exponential(attempt: int, *, base: float, cap: float, jitter: float = 0.5, rand: Random = random.random) -> float:
    """Delay before retry number `attempt` (0-based): base·2^attempt capped at `cap`, minus up to `jitter`·delay."""
    delay: float = min(cap, base * (2.0 ** min(attempt, 62)))
    return delay * (1 - jitter * rand())


def scheduled(
    schedule: Sequence[float], attempts_made: int, *, jitter: float = 0.1, rand: Random = random.random
) -> float | None:
    """Wait before the next attempt after `attempts_made` attempts, or None once the schedule is spent.

    `schedule[i]` is the wait before attempt i+2 (the first attempt is immediate), so N values
    allow N+1 attempts. Jitter spreads retries by up to ±`jitter`·delay so they don't arrive in step.
    """
    index = attempts_made - 1
    if index < 0 or index >= len(schedule):
        return None
    delay = schedule[index]
    return max(0.0, delay * (1 + jitter * (2 * rand() - 1)))


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP-date; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), 1e9)
