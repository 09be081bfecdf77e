"""The `/v1` API and the operator routes: jobs, job actions, generations (with Idempotency-Key), the
event stream, receipts, health and metrics, the inspector page and the OpenAPI document.

May import: the runtime, the store's interface, `ingest` (generations start jobs), `web`, `providers`.
"""
