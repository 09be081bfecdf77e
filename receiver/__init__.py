"""receiver: one endpoint for Grok Imagine results from Oxen, Runware, Pixazo, Apiframe and Lumenfall.

The package's face is the `receiver` command (`receiver.cli`) and `receiver.app.create_app`; importing
`receiver` itself loads nothing else, so a pure adapter can be imported alone.
"""

__version__ = "0.3.0"
