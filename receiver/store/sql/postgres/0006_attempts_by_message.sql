-- The deliveries of one message, in order: SQLite had this index since 0002; PostgreSQL's 0001 missed it
-- (the schema test comparing both dialects found it).

CREATE INDEX IF NOT EXISTS attempts_by_message ON attempts (message_id, id);
