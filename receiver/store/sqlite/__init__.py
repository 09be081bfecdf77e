"""The embedded store: SQLite in WAL mode, owned by one process (`store.SQLiteStore`), its SQL split by
concern: the file and its lock, the write transaction's rows, claimed work, the jobs API, the mirror.
"""
