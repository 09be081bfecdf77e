"""The CloudEvents 1.0 message (structured JSON mode) for one event of `/v1/events`."""

from __future__ import annotations

import orjson

from receiver.store.base import Event

CONTENT_TYPE = "application/cloudevents+json"


def cloudevent(event: Event, source: str) -> bytes:
    """The event as a CloudEvent; `data` is the job JSON exactly as `/v1/events` sends it (spliced, not
    re-encoded), `time` the job's `completed_at`."""
    job = orjson.loads(event.data)
    head = orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(event.seq),
            "source": source,
            "type": event.type,
            "subject": event.job_id,
            "time": job.get("completed_at"),
            "datacontenttype": "application/json",
            "sequence": str(event.seq),
            "provider": job.get("provider"),
        }
    )
    return head[:-1] + b',"data":' + event.data.encode() + b"}"
