"""The state file of `receiver listen`: which source it follows, the last event forwarded, its signing secret."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from receiver.errors import ReceiverError

MAX_STATE_BYTES = 65536


class StateError(ReceiverError):
    """The state file cannot be read or used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class ListenState:
    source: str | None = None  # the --from URL the ids belong to
    last_event_id: int | None = None  # None: nothing forwarded yet and no starting point known
    signing_secret: str | None = None  # generated when RECEIVER_SIGNING_SECRET is not set

    def after(self, event_id: int) -> ListenState:
        return replace(self, last_event_id=event_id)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "last_event_id": self.last_event_id, "signing_secret": self.signing_secret}


def parse_state(text: str) -> ListenState:
    """A state file's content; raises ValueError saying what is wrong with it."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    source, last, secret = raw.get("source"), raw.get("last_event_id"), raw.get("signing_secret")
    if source is not None and not isinstance(source, str):
        raise ValueError("source must be a string")
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 0):
        raise ValueError("last_event_id must be a non-negative integer")
    if secret is not None and not isinstance(secret, str):
        raise ValueError("signing_secret must be a string")
    return ListenState(source=source, last_event_id=last, signing_secret=secret)


def load_state(path: Path) -> ListenState:
    """The state in `path`; an empty state when the file does not exist."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return ListenState()
    except OSError as exc:
        raise StateError(f"cannot read the state file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"the state file {path} is over {MAX_STATE_BYTES} bytes: not one of ours?")
    try:
        return parse_state(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StateError(f"the state file {path} is unreadable ({exc}): delete it or pass --reset") from None


def save_state(path: Path, state: ListenState) -> None:
    """Write `state` atomically (a temporary file in the same directory, then os.replace), owner-only:
    it may hold a signing secret."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(state.to_json(), file, indent=2)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    except OSError as exc:
        raise StateError(f"cannot write the state file {path}: {exc.strerror or exc}") from None
