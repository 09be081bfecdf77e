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


@pytest.mark.parametrize(("address", "public", "private"), [
    ("93.184.216.34", True, True), ("2606:4700::1111", True, True),
    ("127.0.0.1", False, True), ("10.1.2.3", False, True), ("192.168.0.1", False, True),
    ("172.16.0.1", False, True), ("169.254.169.254", False, True), ("::1", False, True),
    ("fe80::1%eth0", False, True), ("fc00::1", False, True), ("::ffff:127.0.0.1", False, True),
    ("100.64.0.1", False, True), ("0.0.0.0", False, False), ("224.0.0.1", False, False), ("not-an-ip", False, False),
])
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


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("bytes=0-9", ByteRange(0, 10)), ("bytes=90-", ByteRange(90, 100)), ("bytes=-10", ByteRange(90, 100)),
    ("bytes=-500", ByteRange(0, 100)), ("bytes=95-200", ByteRange(95, 100)), ("bytes=0-1,5-6", None),
    ("items=0-1", None), ("bytes=9-3", None), ("bytes=-", None),
])
def test_ranges(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, 100)
