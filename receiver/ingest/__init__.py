"""Everything that brings results in: provider webhooks, Oxen's event stream, polling (the reconciler
and Oxen's catch-up), Lumenfall's synchronous calls, the job timeout; and `inbound`, the one path each
message takes from raw bytes to a committed change of its job.

A webhook: `webhooks.receive_webhook` -> `inbound.ingest` -> the store's group commit -> answer.
May import: the runtime, the store's interface, `providers`, `web`, `util`. Not `api`, `delivery`, `media`.
"""
