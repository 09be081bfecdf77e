"""Every fact about the set of providers follows the registry: the API's ProviderName, the settings, the
secrets masked in logs and the inspector's lists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import SecretStr

import receiver
from receiver.logs import secrets_in_force
from receiver.models import PROVIDERS
from receiver.providers import REGISTRY, WEBHOOK_PROVIDERS
from receiver.settings import Secrets, Settings, setting_names


def test_provider_name_is_the_registry() -> None:
    assert sorted(PROVIDERS) == sorted(REGISTRY)


def test_each_provider_has_its_settings() -> None:
    names = set(setting_names())
    for name, provider in REGISTRY.items():
        assert {f"RECEIVER_{name.upper()}_API_KEY", f"RECEIVER_{name.upper()}_BASE_URL"} <= names
        settings = Settings.model_validate({})  # the defaults, whatever the environment
        assert settings.base_url(name) == provider.base_url.rstrip("/")
        assert settings.api_key(name) is None


def test_every_provider_secret_is_masked() -> None:
    values = {f"{name}_api_key": f"key-of-{name}" for name in REGISTRY}
    values |= {
        p.webhook_secret: f"hook-secret-of-{n}"
        for n, p in REGISTRY.items()
        if p.webhook_secret and p.webhook_secret not in values
    }
    settings = Settings.model_validate({k: SecretStr(v) for k, v in values.items()})
    masked = secrets_in_force(settings, Secrets(api_token="a" * 8, webhook_token="w" * 8, signing_secret="s" * 8))
    assert set(values.values()) <= set(masked)


def _js_list(source: str, name: str) -> list[str]:
    match = re.search(rf"^const {name} = (\[.*?\]);$", source, re.MULTILINE)
    assert match, f"{name} not found in app.js"
    found: list[str] = json.loads(match.group(1))
    return found


def test_inspector_lists_the_registry() -> None:
    source = (Path(receiver.__file__).parent / "ui" / "app.js").read_text()
    assert _js_list(source, "PROVIDERS") == list(REGISTRY)
    assert _js_list(source, "WEBHOOK_PROVIDERS") == list(WEBHOOK_PROVIDERS)
