"""The knobs of the background workers (the Oxen consumer, the media mirror, the delivery worker): one
value each per app, carried in the Runtime, so tests pass fast ones to `create_app` instead of patching a
module."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamTuning:
    """Timings of the Oxen consumer (receiver.ingest.oxen_stream)."""

    keep_alive_s: float = 15.0  # Oxen sends `: keep-alive` this often when idle
    stall_factor: float = 2.5  # no byte for stall_factor·keep_alive_s means the connection is dead
    connect_timeout_s: float = 10.0
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    unauthorized_base_s: float = 15.0  # a refused key is a configuration error: retry slowly
    unauthorized_cap_s: float = 60.0
    healthy_after_s: float = 30.0  # a connection that stayed up this long resets the backoff
    poll_timeout_s: float = 15.0
    poll_concurrency: int = 4
    in_flight: int = 256  # stream events being ingested at once (the store commits them together)
    # Oxen's events are a few hundred bytes: a line or an event over these ends the connection, and
    # its first `kept_chars` are kept as an invalid receipt.
    max_line_chars: int = 1024 * 1024
    max_event_chars: int = 1024 * 1024
    kept_chars: int = 64 * 1024

    @property
    def stall_timeout_s(self) -> float:
        return self.keep_alive_s * self.stall_factor


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorTuning:
    """Timings of the media mirror (receiver.media.mirror)."""

    attempt_timeout_s: float = 60.0  # one fetch and upload, start to end (a trickling origin stops here)
    read_timeout_s: float = 15.0  # silence between two reads
    retry_for_s: float = 120.0  # transient failures are retried this long after the task was queued
    first_retry_s: float = 1.0
    max_retry_s: float = 30.0
    concurrency: int = 16  # outputs mirrored at once by this replica
    per_origin_concurrency: int = 4  # of which from one origin (host:port): a slow one holds only these
    poll_s: float = 1.0  # look for tasks at least this often (others' tasks, retries coming due)
    sweep_every_s: float = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryLimits:
    """Bounds of the delivery worker; a destination is `scheme://host:port`.

    A message is *held* from its claim until its attempt is recorded (in flight, or waiting for one of
    its destination's slots). A destination holds at most `per_host_held`, so destinations that never
    answer can fill at most `max_held // per_host_held - 1` shares and the rest stays open to others.
    """

    # Requests in flight to one destination. Under load every await of an attempt waits its turn behind
    # the webhooks the loop is answering, so a callback takes several milliseconds even to a fast
    # endpoint: a few at a time would let one destination fall behind the webhooks coming in.
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
            raise ValueError(
                "a destination's limits must be at most half of the overall ones, or one destination "
                "could crowd out the others"
            )
