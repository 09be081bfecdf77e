"""How a JetStream acknowledgement is read: stored, a duplicate, or the error that refuses the message."""

from __future__ import annotations

import pytest

from receiver.sinks.nats import NO_RESPONDERS, UNREADABLE, _error


@pytest.mark.parametrize(
    "reply",
    [b'{"stream":"S", "seq":1}', b'{"stream":"S", "seq":1,"duplicate": true}', b'{"seq":1,"stream":"S"}'],
)
def test_a_stored_message_or_a_duplicate_carries_no_error(reply: bytes) -> None:
    assert _error(reply) is None


def test_an_error_is_read_wherever_it_is() -> None:
    refused = (
        b'{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"},"stream":"S","seq":0}'
    )
    assert _error(refused) == {"code": 400, "err_code": 10060, "description": "expected stream does not match"}
    after = b'{"stream":"S","seq":0,"error":{"code":503,"description":"unavailable"}}'
    assert _error(after) == {"code": 503, "description": "unavailable"}
    assert _error(NO_RESPONDERS) == {"code": 503, "description": "no stream answered (is it gone?)"}
    assert _error(b'{"stream":"S","error":"flat"}') == {"description": "flat"}


@pytest.mark.parametrize("reply", [b"", b"+OK", b'{"stream":', b"[1]", b'"x"'])
def test_an_unreadable_acknowledgement_is_an_error(reply: bytes) -> None:
    assert _error(reply) == UNREADABLE
