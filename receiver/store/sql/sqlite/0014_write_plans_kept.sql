-- PostgreSQL's write call keeps its plans (its functions have no SQLite counterpart). Nothing changes.
SELECT 1;
