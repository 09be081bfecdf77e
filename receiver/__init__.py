"""receiver: one endpoint for Grok Imagine results from Oxen, Runware, Pixazo, Apiframe and Lumenfall."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Imported on first use: `receiver listen`, a client, must not load the server's modules.
    if name == "create_app":
        from receiver.app import create_app

        return create_app
    if name == "Settings":
        from receiver.settings import Settings

        return Settings
    raise AttributeError(f"module 'receiver' has no attribute {name!r}")


__all__ = ["Settings", "create_app"]
__version__ = "0.1.0"
