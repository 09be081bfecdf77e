"""Local development: `receiver listen` (follow a deployed receiver's events and forward them to a
local URL) and finding a local tunnel for `serve` and `info`. A client: it imports no server module.

May import: `receiver.errors`, `receiver.models`, `util`.
"""
