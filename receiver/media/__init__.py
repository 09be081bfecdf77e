"""The media mirror: where objects go (`target`, `objects`), fetching with every destination checked
(`guard`, `fetch`), the worker that mirrors each output (`mirror`), and `/media/` serving (`routes`, `sign`).

May import: the runtime, the store's interface, `util`. Not `api`, `ingest`, `delivery`.
"""
