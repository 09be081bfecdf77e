-- PostgreSQL's group commit in two round trips (its function has no SQLite counterpart: one writer
-- here, the batch is read and written inside one transaction on one connection). Nothing changes.
SELECT 1;
