"""Media mirroring into S3, for real: a moto server on loopback (never a mock object).
Skips, saying why, without moto; with RECEIVER_REQUIRE_S3=1 (CI) that fails instead."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.callback import callback_server
from tests.fakes.origin import image_bytes, media_origin
from tests.integration.media.support import callback_for, deliver, get, mirroring_receiver
from tests.support import eventually, free_port

S3_REQUIRED = os.environ.get("RECEIVER_REQUIRE_S3") == "1"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """A moto S3 server on 127.0.0.1 with an empty bucket; the AWS_* variables point at it."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        if S3_REQUIRED:
            pytest.fail(f"moto[server] is not installed ({exc}) and RECEIVER_REQUIRE_S3=1")
        pytest.skip(f"moto[server] is not installed ({exc}): S3 mirroring untested here")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in (
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = f"receiver-test-{uuid.uuid4().hex[:12]}"  # moto's state outlives its server: a bucket per test
    client.create_bucket(Bucket=bucket)
    try:
        yield S3(client, bucket)
    finally:
        server.stop()


@dataclass(frozen=True)
class S3:
    client: Any
    bucket: str

    def keys(self) -> list[str]:
        return sorted(o["Key"] for o in self.client.list_objects_v2(Bucket=self.bucket).get("Contents", []))


async def test_s3_mirror_redirects_to_a_presigned_url(tmp_path: Path, s3: S3) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback, media_url=f"s3://{s3.bucket}/mirror") as server,
    ):
        job_id = await deliver(server, "px-s3", origin.url("/img/6000-s"), media_type="image/png")
        output = (await callback_for(callback, job_id))["data"]["outputs"][0]
        data = image_bytes(6000, "s")
        assert output["sha256"] == hashlib.sha256(data).hexdigest() and output["mirror_error"] is None
        assert s3.keys() == [f"mirror/objects/{output['sha256']}"]
        assert s3.client.head_object(Bucket=s3.bucket, Key=s3.keys()[0])["ContentType"] == "image/png"
        url = output["stored_url"]
        redirect = await get(url)
        assert redirect.status_code == 307 and redirect.headers["location"].startswith(os.environ["AWS_ENDPOINT_URL"])
        async with httpx.AsyncClient(timeout=10, follow_redirects=True) as client:
            whole = await client.get(url)
            assert whole.status_code == 200 and whole.content == data
            part = await client.get(url, headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == data[100:200]
            head = await client.head(url)
            assert head.status_code == 200 and head.headers["content-length"] == "6000"
            assert head.headers["etag"] == f'"{output["sha256"]}"'
        sig, sha = url.rsplit("/", 2)[-2:]
        assert (await get(url.replace(sig, sig[::-1]))).status_code == 404


async def test_s3_retention_deletes_the_object(tmp_path: Path, s3: S3) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(
            tmp_path, callback, media_url=f"s3://{s3.bucket}", media_retention_days=1.5 / 86400
        ) as server,
    ):
        job_id = await deliver(server, "px-s3-old", origin.url("/img/800"))
        url = (await callback_for(callback, job_id))["data"]["outputs"][0]["stored_url"]

        async def gone() -> bool:
            return (await get(url)).status_code == 410

        await eventually(gone, 20, "the object to expire")
        await eventually(lambda: s3.keys() == [], 10, f"the object to leave the bucket: {s3.keys()}")


async def test_s3_object_gone_from_the_bucket_is_404_to_get_and_head(tmp_path: Path, s3: S3) -> None:
    async with (
        media_origin() as origin,
        callback_server() as callback,
        mirroring_receiver(tmp_path, callback, media_url=f"s3://{s3.bucket}") as server,
    ):
        job_id = await deliver(server, "px-s3-gone", origin.url("/img/900"))
        url = (await callback_for(callback, job_id))["data"]["outputs"][0]["stored_url"]
        assert (await get(url)).status_code == 307
        for key in s3.keys():  # removed behind the receiver's back (a lifecycle rule, a hand)
            s3.client.delete_object(Bucket=s3.bucket, Key=key)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(url)).status_code == 404
            assert (await client.head(url)).status_code == 404
        assert server.runtime.media.target.kind == "s3"
