-- Media objects kept in the database (RECEIVER_MEDIA_URL=db): an upload's bytes in fixed-size chunks
-- (neither storing nor serving, Range included, holds more than a chunk), and the name `objects/<sha256>`
-- given to a finished upload: naming writes one small row, never the chunks again.

CREATE TABLE IF NOT EXISTS media_chunks (
    upload TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (upload, seq)
);

-- Images and videos are compressed already: store them out of line as they are.
ALTER TABLE media_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE IF NOT EXISTS media_names (
    key TEXT PRIMARY KEY,
    upload TEXT NOT NULL UNIQUE
);
