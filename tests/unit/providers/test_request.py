"""What every provider's requests share (receiver/providers/_request.py): deep merging of `params`, and the
message a refusal is summed up in."""

from __future__ import annotations

import pytest

from receiver.providers._request import merge, refusal_message


def test_merge_is_deep_and_extra_wins() -> None:
    base = {"a": 1, "nested": {"x": 1, "y": 2}, "list": [1]}
    assert merge(base, {"nested": {"y": 3, "z": 4}, "list": [2], "b": None}) == {
        "a": 1,
        "nested": {"x": 1, "y": 3, "z": 4},
        "list": [2],
        "b": None,
    }
    assert base == {"a": 1, "nested": {"x": 1, "y": 2}, "list": [1]}  # not mutated


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        pytest.param(
            402,
            b'{"error": "Insufficient Balance", "message": "Your wallet does not have enough balance."}',
            "Your wallet does not have enough balance.",
            id="message-over-error",
        ),
        pytest.param(429, b'{"error": "Too Many Requests"}', "Too Many Requests", id="error-string"),
        pytest.param(
            400, b'{"error": {"message": "bad size", "type": "invalid_request_error"}}', "bad size", id="error-object"
        ),
        pytest.param(
            400,
            b'{"errors": [{"code": "c", "message": "first"}, {"message": "second"}]}',
            "first; second",
            id="errors-list",
        ),
        pytest.param(
            404,
            b'{"error": {"type": "resource_not_found", "title": "Generation not found"}}',
            "resource_not_found",
            id="error-type",
        ),
        pytest.param(500, b"<html>upstream exploded</html>", "<html>upstream exploded</html>", id="not-json"),
        pytest.param(503, b"", "HTTP 503 with an empty body", id="empty"),
    ],
)
def test_refusal_message(status: int, body: bytes, message: str) -> None:
    assert refusal_message(status, body) == message
