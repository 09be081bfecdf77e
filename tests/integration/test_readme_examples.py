"""The README's copy-paste webhook for each provider, sent as written to a real server, is accepted (200)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import httpx

from tests.support import WEBHOOK_TOKEN, ReceiverProcess, process_env

README = Path(__file__).resolve().parents[2] / "README.md"


def curl_examples() -> dict[str, tuple[dict[str, str], bytes]]:
    """provider → (headers, body) of each `curl … /webhooks/<provider>` line of the README."""
    found: dict[str, tuple[dict[str, str], bytes]] = {}
    for line in README.read_text().splitlines():
        if not line.startswith("curl ") or "/webhooks/" not in line:
            continue
        words = shlex.split(line)
        provider = re.search(r"/webhooks/(\w+)\?", line)
        assert provider is not None, line
        headers = dict(w.split(": ", 1) for w, flag in zip(words[1:], words) if flag == "-H")
        body = next(w for w, flag in zip(words[1:], words) if flag == "-d").encode()
        found[provider.group(1)] = (headers, body)
    return found


def test_each_readme_webhook_example_is_accepted(tmp_path: Path) -> None:
    examples = curl_examples()
    assert set(examples) == {"pixazo", "runware", "apiframe", "lumenfall"}
    proc = ReceiverProcess(process_env(tmp_path), cwd=tmp_path).start()
    try:
        for provider, (headers, body) in examples.items():
            json.loads(body)  # as written, valid JSON
            reply = httpx.post(
                f"{proc.base_url}/webhooks/{provider}?token={WEBHOOK_TOKEN}", headers=headers, content=body, timeout=10
            )
            assert reply.status_code == 200, (provider, reply.text)
            assert reply.json()["outcome"] == "applied", (provider, reply.text)
    finally:
        proc.stop()
