"""Results going out: the worker that claims due callback messages, signs them (Standard Webhooks),
sends one attempt each over HTTP (`client`) within per-destination limits (`receiver.tuning.DeliveryLimits`), and records it.

May import: the runtime, the store's interface, `util`. Not `api`, `ingest`, `media`.
"""
