"""`load_object`: orjson's speed with the standard library's reading of JSON."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.errors import InvalidPayload
from receiver.providers._parse import has_long_digits, load_object

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=5), st.booleans())
def test_it_reads_what_the_standard_library_reads(obj: dict[str, object], ascii_only: bool) -> None:
    body = json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:  # a lone surrogate written raw: not UTF-8, refused either way
        with pytest.raises(InvalidPayload, match="UTF-8"):
            load_object(body)
        return
    assert repr(load_object(body)) == repr(expected)


@pytest.mark.parametrize(
    "body, check",
    [
        (b'{"id": 123456789012345678901234567890}', lambda o: o["id"] == 123456789012345678901234567890),
        (b'{"id": -18446744073709551617}', lambda o: o["id"] == -18446744073709551617),
        (b'{"id": 18446744073709551615}', lambda o: o["id"] == 18446744073709551615 and isinstance(o["id"], int)),
        (b'{"e": "\\ud800"}', lambda o: o["e"] == "\ud800"),
        (b'{"x": NaN, "y": Infinity}', lambda o: math.isnan(o["x"]) and o["y"] == math.inf),
        (b'{"x": 1e400}', lambda o: o["x"] == math.inf),
    ],
)
def test_json_orjson_would_read_otherwise_is_read_as_json_reads_it(body: bytes, check: object) -> None:
    assert callable(check) and check(load_object(body))


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "empty body"),
        (b"  \n", "empty body"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'"text"', "expected a JSON object, got str"),
        (b'{"a": 1,}', "body is not JSON: .* line 1 column 9"),
        (b'{"a": "\xff"}', r"not valid UTF-8 \(byte 7\)"),
        (b"\xef\xbb\xbf{}", "body is not JSON: Unexpected UTF-8 BOM"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_what_is_not_an_object_is_named(body: bytes, message: str) -> None:
    with pytest.raises(InvalidPayload, match=message):
        load_object(body)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"0", b"9", b"5", b"a", b"/", b":", b" ", b"\x00", b"\xff", b"1" * 18, b"2" * 19]), max_size=40
    )
)
def test_a_run_of_19_digits_is_found_as_the_regex_finds_it(parts: list[bytes]) -> None:
    body = b"".join(parts)
    assert has_long_digits(body) is (re.search(rb"[0-9]{19}", body) is not None)
