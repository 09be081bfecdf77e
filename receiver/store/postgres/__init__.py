"""The shared store: PostgreSQL through asyncpg for any number of replicas (`store.PostgresStore`), its
SQL split by concern: claimed work, the jobs API, the mirror.
"""
