"""receiver: one endpoint for Grok Imagine results from Oxen, Runware, Pixazo, Apiframe and Lumenfall."""

from receiver.app import create_app
from receiver.settings import Settings

__all__ = ["Settings", "create_app"]
__version__ = "0.1.0"
