-- Several replicas: leases, heartbeats, owned calls; receipts know their jobs.

-- On PostgreSQL these tables and columns are part of 0001: its store began with replicas.
SELECT 1;
