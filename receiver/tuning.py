"""The knobs of the background workers, one group per worker, each defined here and nowhere else.

StreamTuning, MirrorTuning and DeliveryLimits are one value each per app, carried in the Runtime, so tests
pass fast ones to `create_app` instead of patching a module; the other groups are read from their one
instance below (`DELIVERY`, `HTTP`, ...)."""

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
    incoming_ttl_s: float = 3600.0  # an upload unfinished for this long was cut short by a crash


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


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryTuning:
    """Timings of the delivery worker (receiver.delivery.worker); its bounds are DeliveryLimits."""

    # Messages beyond a destination's share are postponed in shares, each one step after the one before;
    # a step is between these bounds (see `_Deliverer._step`), and no share is put off more than
    # max_postpone_s.
    min_postpone_s: float = 0.002
    postpone_s: float = 1.0
    max_postpone_s: float = 30.0
    # A held message may queue behind its destination's slots: its lease covers those attempts and this.
    lease_margin_s: float = 10.0
    max_idle_s: float = 30.0  # re-check the store at least this often, wake-ups or not
    hand_back_s: float = 5.0  # how long shutdown waits for the store to take claimed messages back


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpTuning:
    """Deadlines on reading a request (receiver.web.server): a slow client holds a connection this long."""

    head_timeout_s: float = 10.0
    body_timeout_s: float = 30.0  # a 1 MiB webhook at 35 KB/s


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsTuning:
    """The receiver's own SSE stream (receiver.api.events)."""

    keepalive_s: float = 15.0  # a comment this often when idle, so proxies and clients see the stream alive
    # A job's event is written when it completes, or later (once its outputs are mirrored), so a replay by
    # completion time starts at the first event written at `since`; this margin covers replicas' clocks
    # that disagree by up to this much.
    clock_skew_s: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestTuning:
    """The ingest side's background loops (receiver.ingest)."""

    # Lumenfall calls whose replica died are failed by the survivors: they look this often.
    orphan_check_s: float = 10.0
    # The job timeout sweep runs often enough that a job fails within a few percent of its timeout, and
    # at most this late.
    max_sweep_every_s: float = 30.0
    # The reconciler looks for due polls at least this often, and backs off one job's polls up to this.
    max_poll_interval_s: float = 1.0
    max_poll_backoff_s: float = 3600.0
    poll_lease_s: float = 120.0  # longer than any poll can take; schedule_poll then sets the real next time


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaTuning:
    """Replicas' liveness (receiver.app's heartbeat, read by the stores' orphan queries)."""

    heartbeat_s: float = 5.0
    # A replica whose heartbeat is older than this is gone (its calls are orphans): several missed beats,
    # so a replica busy for a moment is not taken for dead.
    ttl_s: float = 30.0


DELIVERY = DeliveryTuning()
HTTP = HttpTuning()
EVENT_STREAM = EventsTuning()
INGEST = IngestTuning()
REPLICAS = ReplicaTuning()


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkTuning:
    """The broker sinks' publishers (receiver.sinks)."""

    ack_timeout_s: float = 10.0  # a broker that has not acknowledged a batch by then is treated as down
    connect_timeout_s: float = 5.0
    # The publisher gives way to requests: it counts the loop as busy when other work takes this much CPU
    # while it yields a few times, then checks again after defer_first_s, backing off to defer_step_s, and
    # publishes at least once every defer_max_s however busy the loop is.
    busy_cpu_s: float = 0.0015
    defer_first_s: float = 0.002
    defer_step_s: float = 0.05
    defer_max_s: float = 1.0
    idle_backstop_s: float = 5.0  # one process: every change wakes the loop; this only bounds a missed wake-up
    retry_base_s: float = 0.5  # a failing broker is retried with backoff from here…
    retry_cap_s: float = 30.0  # …to here
    save_every_s: float = 0.5  # the position is written to the store at most this often while publishing
    linger_s: float = 0.005  # added to a new event's way to the broker, at most: one batch carries several commits


SINKS = SinkTuning()
