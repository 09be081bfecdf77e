"""`RECEIVER_SINKS` parsing, the CloudEvent envelope, and a bad sink URL stopping `serve` (one line, exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from receiver.sinks.envelope import cloudevent
from receiver.sinks.urls import hide_password, parse_sink_url, parse_sinks
from receiver.store.base import Event
from tests.support import process_env


def test_defaults_and_names() -> None:
    nats_, redis_, amqp_ = parse_sinks("nats://h, redis://h ,amqp://u:p@h/vh?exchange=x")
    assert (nats_.name, nats_.prefix, nats_.port, nats_.server_url) == ("nats:RECEIVER", "receiver", 4222, "nats://h")
    assert (redis_.name, redis_.db, redis_.maxlen, redis_.server_url) == ("redis:receiver:events", 0, 0, "redis://h/0")
    assert (amqp_.name, amqp_.vhost, amqp_.shown) == ("amqp:x", "vh", "amqp://u:***@h/vh?exchange=x")
    assert parse_sink_url("redis://h:7000/3?stream=a:b&maxlen=100").maxlen == 100
    assert "p@" not in repr(amqp_)


@pytest.mark.parametrize(
    "url, why",
    [
        ("kafka://h", "unknown scheme"),
        ("nats:///x", "no host"),
        ("nats://h/a b", "subject prefix"),
        ("nats://h/x?stream=a.b", "stream"),
        ("nats://h?queue=x", "unknown option 'queue'"),
        ("redis://h/zero", "database"),
        ("redis://h?maxlen=-1", "maxlen"),
        ("amqp://h?exchange=amq.topic", "exchange"),
        ("amqp://h:99999", "not a URL"),
    ],
)
def test_bad_urls(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_sink_url(url)


def test_two_sinks_of_one_name() -> None:
    with pytest.raises(ValueError, match="two sinks"):
        parse_sinks("nats://a/x, nats://b/y")


def test_hide_password() -> None:
    assert hide_password("amqp://user:pw@host:5672/v") == "amqp://user:***@host:5672/v"
    assert hide_password("redis://:pw@host") == "redis://:***@host"
    assert hide_password("nats://host") == "nats://host"
    assert hide_password("nats://s3cr3tT0ken@host:4222/r") == "nats://***@host:4222/r"  # NATS's token form
    for broken in ("amqp://user:pa/ss@host/vh", "amqp://user:pa#ss@host/", "amqp://user:pa?ss@host/"):
        assert "pa" not in hide_password(broken).replace("amqp", ""), broken  # unparsable: scheme only


def test_a_nats_token_is_a_secret_everywhere() -> None:
    from receiver.sinks.publisher import describe

    spec = parse_sink_url("nats://s3cr3tT0ken@127.0.0.1:4222/receiver")
    assert "s3cr3tT0ken" not in spec.shown
    assert "s3cr3tT0ken" not in describe(ConnectionError("auth s3cr3tT0ken refused"), spec)


def test_cloudevent_splices_the_job_json() -> None:
    job = '{"id":"j1","provider":"runware","completed_at":"2026-01-01T00:00:00Z","outputs":[]}'
    body = cloudevent(Event(7, "j1", "job.failed", job), "https://r.example")
    ce = orjson.loads(body)
    assert ce == {
        "specversion": "1.0",
        "id": "7",
        "source": "https://r.example",
        "type": "job.failed",
        "subject": "j1",
        "time": "2026-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "sequence": "7",
        "provider": "runware",
        "data": orjson.loads(job),
    }
    assert body.endswith(b'"data":' + job.encode() + b"}")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("kafka://u:hunter22@h/x", "u:***@h"),
        ("amqp://u:hunter22@h:notaport/", "amqp://***"),
        ("amqp://u:hun/ter22@h/vh", "amqp://***"),
    ],
)
def test_bad_sink_url_stops_serve_with_one_line(tmp_path: Path, value: str, shown: str) -> None:
    env = process_env(tmp_path, RECEIVER_SINKS=value)
    done = subprocess.run(
        [sys.executable, "-m", "receiver", "serve", "--port", "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RECEIVER_SINKS" in lines[0] and shown in lines[0], done.stderr
    assert "hunter22" not in done.stderr + done.stdout and "ter22" not in done.stderr


def test_error_text_never_shows_the_password() -> None:
    from receiver.sinks.publisher import describe

    spec = parse_sink_url("amqp://u:p%40ss@h/")
    text = describe(ConnectionError("login refused for u:p@ss (p%40ss)"), spec)
    assert "p@ss" not in text and "p%40ss" not in text and text.startswith("ConnectionError: login refused for u:***")
