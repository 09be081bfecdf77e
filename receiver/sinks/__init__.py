"""Pipelines: every event of `/v1/events` published, in order and at least once, to brokers.

`urls` parses `RECEIVER_SINKS`; `envelope` makes the CloudEvent; `nats`, `redis_streams` and `amqp`
each publish a batch to one broker; `publisher` runs one loop per sink (under a lease, so one replica
publishes to a sink at a time) and keeps its position in the store.
"""
