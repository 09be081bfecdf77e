-- /v1/events?since=: where a replay by completion time starts (Store.first_event_seq), without a scan
-- of every event.

CREATE INDEX IF NOT EXISTS events_by_created ON events (created_at);
