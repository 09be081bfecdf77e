"""The pure parts of media mirroring: settings URL, destination checks, data URIs, signatures, ranges."""

from __future__ import annotations

import pytest

from receiver.media.guard import MirrorFailure, address_allowed, check_content_type, parse_data_uri
from receiver.media.sign import ByteRange, Unsatisfiable, media_path, parse_range, signature, verified_sha256
from receiver.media.target import MediaTarget, parse_media_url

SHA = "ab" * 32


def test_media_url_forms() -> None:
    assert parse_media_url("off") == MediaTarget("off")
    assert parse_media_url("/var/media").path == "/var/media" and parse_media_url("/var/media").kind == "local"
    assert parse_media_url("./m").path.endswith("/m")
    assert parse_media_url("file:///srv/media") == MediaTarget("local", path="/srv/media")
    assert parse_media_url("s3://bucket/a/b/") == MediaTarget("s3", bucket="bucket", prefix="a/b")
    for bad in ("", "ftp://x/y", "s3:///nobucket", "file://host/x"):
        with pytest.raises(ValueError):
            parse_media_url(bad)


@pytest.mark.parametrize(
    ("address", "public", "private"),
    [
        ("93.184.216.34", True, True),
        ("2606:4700::1111", True, True),
        ("127.0.0.1", False, True),
        ("10.1.2.3", False, True),
        ("192.168.0.1", False, True),
        ("172.16.0.1", False, True),
        ("169.254.169.254", False, True),
        ("::1", False, True),
        ("fe80::1%eth0", False, True),
        ("fc00::1", False, True),
        ("::ffff:127.0.0.1", False, True),
        ("100.64.0.1", False, True),
        ("0.0.0.0", False, False),
        ("224.0.0.1", False, False),
        ("not-an-ip", False, False),
    ],
)
def test_address_policy(address: str, public: bool, private: bool) -> None:
    assert address_allowed(address, allow_private=False) is public
    assert address_allowed(address, allow_private=True) is private


def test_content_types() -> None:
    assert check_content_type("image/png; charset=x", None) == "image/png"
    assert check_content_type("video/mp4", "image/png") == "video/mp4"
    assert check_content_type("application/octet-stream", "image/webp") == "image/webp"
    assert check_content_type(None, None) == "application/octet-stream"
    with pytest.raises(MirrorFailure) as refused:
        check_content_type("text/html", "image/png")
    assert not refused.value.transient and "text/html" in refused.value.reason


def test_data_uris() -> None:
    assert parse_data_uri("data:image/png;base64,aGVsbG8=", max_bytes=10).data == b"hello"
    assert parse_data_uri("data:image/svg+xml,%3Csvg%3E", max_bytes=10).data == b"<svg>"
    assert parse_data_uri("data:;base64,aGVsbG8=", max_bytes=10).media_type is None
    for bad in ("data:image/png;base64", "data:image/png;base64,aGVsbG8gd29ybGQgaGVsbG8="):
        with pytest.raises(MirrorFailure):
            parse_data_uri(bad, max_bytes=10)


def test_signed_paths() -> None:
    key = b"k" * 32
    path = media_path(key, SHA)
    rest = path.removeprefix("/media/")
    assert verified_sha256(key, rest) == SHA
    assert verified_sha256(b"other" * 8, rest) is None
    assert verified_sha256(key, f"{signature(key, 'cd' * 32)}/{SHA}") is None
    for bad in ("", SHA, f"x/{SHA}", f"{rest}/extra", rest.upper()):
        assert verified_sha256(key, bad) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", ByteRange(0, 10)),
        ("bytes=90-", ByteRange(90, 100)),
        ("bytes=-10", ByteRange(90, 100)),
        ("bytes=-500", ByteRange(0, 100)),
        ("bytes=95-200", ByteRange(95, 100)),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=9-3", None),
        ("bytes=-", None),
    ],
)
def test_ranges(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, 100)


ORIGIN_URLS = [
    "https://CDN.example.com/a/b.png",
    "http://127.0.0.1:8080/x",
    "https://h.test",
    "https://h.test?q=1/2",
    "data:image/png;base64,AAAA",
    "http://user@Host:1/p://q",
    "",
]


def test_the_origin_of_a_url_is_the_same_in_python_and_in_sqlite() -> None:
    import sqlite3

    from receiver.store.mirror_fair import SQLITE_ORIGIN, origin_of

    db = sqlite3.connect(":memory:")
    for url in ORIGIN_URLS:
        assert db.execute(f"SELECT {SQLITE_ORIGIN} FROM (SELECT ? AS url)", (url,)).fetchone()[0] == origin_of(url), url
    assert origin_of("https://CDN.example.com/a") == "cdn.example.com" and origin_of("data:x") == ""


async def test_the_origin_of_a_url_is_the_same_in_python_and_in_postgresql(postgres_url: str) -> None:
    import asyncpg

    from receiver.store.mirror_fair import POSTGRES_ORIGIN, origin_of

    conn = await asyncpg.connect(postgres_url)
    try:
        for url in ORIGIN_URLS:
            assert await conn.fetchval(f"SELECT {POSTGRES_ORIGIN} FROM (SELECT $1::text AS url) t", url) == origin_of(
                url
            )
    finally:
        await conn.close()


def test_a_claim_takes_at_most_each_origins_room() -> None:
    from receiver.store.mirror_fair import pick

    rows = [(i, f"http://{host}/{i}") for i, host in enumerate("aaaaabbbcaaad")]
    chosen = pick(rows, limit=6, room={"b": 1, "c": 0}, per_origin=2, url_at=1)
    assert [r[1][7] for r in chosen] == ["a", "a", "b", "d"]
    assert len(pick(rows + [(99, "data:,x")] * 5, limit=20, room=None, per_origin=1, url_at=1)) == 4 + 5
