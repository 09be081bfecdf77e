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

    # Requests in flight to one destination. Under load every await of an attempt waits its turn behind
    # the webhooks the loop is answering, so a callback takes several milliseconds even to a fast
    # endpoint: with 8 at a time one destination got 1,600 callbacks/s while 3,000 webhooks/s came in.
    per_host_concurrency: int = 32
    per_host_held: int = 64  # messages held for one destination; more are postponed
    max_concurrency: int = 256  # requests in flight overall
    max_held: int = 512  # messages held overall

    def __post_init__(self) -> None:
        if min(self.per_host_concurrency, self.per_host_held, self.max_concurrency, self.max_held) < 1:
            raise ValueError("delivery limits must be positive")
        if self.per_host_held < self.per_host_concurrency:
            raise ValueError("per_host_held must be at least per_host_concurrency")
        if self.per_host_held * 2 > self.max_held or self.per_host_concurrency * 2 > self.max_concurrency:
            raise ValueError("a destination's limits must be at most half of the overall ones, or one destination "
                             "could crowd out the others")
