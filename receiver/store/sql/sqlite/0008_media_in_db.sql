-- Media objects kept in the database (RECEIVER_MEDIA_URL=db): an upload's bytes in fixed-size chunks
-- (neither storing nor serving, Range included, holds more than a chunk), and the name `objects/<sha256>`
-- given to a finished upload: naming writes one small row, never the chunks again. `data` comes last:
-- SQLite reads a column after a blob by walking the blob's overflow pages.

CREATE TABLE IF NOT EXISTS media_chunks (
    upload TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (upload, seq)
);

CREATE TABLE IF NOT EXISTS media_names (
    key TEXT PRIMARY KEY,
    upload TEXT NOT NULL UNIQUE
);
