"""Small HTTP helpers (`receiver.web.http`)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from receiver.web.http import header_value, query_value

_query_text = st.lists(st.sampled_from([*"token=abc&;+%20xyZ_-.~é\x00", "%2B", "%3D", "%26", "%zz"]), max_size=20).map(
    "".join
)


@settings(max_examples=500, deadline=None)
@given(_query_text, st.sampled_from(["token", "tok", "", "x"]))
def test_query_value_reads_as_starlette_reads(text: str, name: str) -> None:
    raw = text.encode("latin-1", "replace")
    expected = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)).get(name)
    assert query_value(raw, name) == expected


@pytest.mark.parametrize(
    "raw, value",
    [
        (b"token=abc", "abc"),
        (b"token=abc&token=def", "def"),  # the last one counts
        (b"x=1&token", ""),
        (b"token=a%2Bb", "a+b"),
        (b"token=a+b", "a b"),
        (b"", None),
        (b"tokens=abc", None),
    ],
)
def test_query_value(raw: bytes, value: str | None) -> None:
    assert query_value(raw, "token") == value


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([b"content-length", b"content-type", b"x-a"]), st.binary(max_size=4))),
    st.sampled_from(["content-length", "content-type", "x-b"]),
)
def test_header_value_reads_as_starlette_reads(raw: list[tuple[bytes, bytes]], name: str) -> None:
    assert header_value(raw, name.encode()) == Headers(raw=raw).get(name)
