"""How much the delivery worker takes on at once, overall and for any one destination."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryLimits:
    """Bounds of the delivery worker; a destination is `scheme://host:port`.

    A message is *held* from its claim until its attempt is recorded (in flight, or waiting for one of
    its destination's slots). A destination holds at most `per_host_held`, so destinations that never
    answer can fill at most `max_held // per_host_held - 1` shares and the rest stays open to others.
    """

    per_host_concurrency: int = 8  # requests in flight to one destination
    per_host_held: int = 32  # messages held for one destination; more are postponed
    max_concurrency: int = 64  # requests in flight overall
    max_held: int = 256  # messages held overall

    def __post_init__(self) -> None:
        if min(self.per_host_concurrency, self.per_host_held, self.max_concurrency, self.max_held) < 1:
            raise ValueError("delivery limits must be positive")
        if self.per_host_held < self.per_host_concurrency:
            raise ValueError("per_host_held must be at least per_host_concurrency")
        if self.per_host_held * 2 > self.max_held:
            raise ValueError("per_host_held must be at most half of max_held, or one destination can crowd out others")
