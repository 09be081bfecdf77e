"""Small helpers with no knowledge of the receiver: asyncio, backoff, bounded SSE reading, URL checks.

May import: `receiver.errors` only.
"""
