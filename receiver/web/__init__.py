"""The HTTP plumbing every route shares: JSON errors, bounded bodies, the bearer check, request
validation into 422s, and the uvicorn server with the bounds it lacks.

May import: `receiver.errors`, `receiver.models`, `receiver.util`.
"""
