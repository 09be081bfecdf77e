"""Every fact about the set of providers follows the registry, and the registry follows the modules: the
API's provider names, the settings, the secrets masked in logs and the inspector's lists."""

from __future__ import annotations

import pkgutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

import receiver
import receiver.providers
from receiver.api.generations import Generate
from receiver.api.inspector import PROVIDERS_LISTING
from receiver.api.openapi import document
from receiver.logs import secrets_in_force
from receiver.providers import PROVIDER_NAMES, REGISTRY, WEBHOOK_PROVIDERS, Provider, RegistryError, discover
from receiver.providers import pixazo as pixazo_module
from receiver.settings import PROVIDER_SECRETS, Secrets, Settings, setting_names
from receiver.web.validation import RegisterJob


def test_the_registry_is_every_public_module() -> None:
    modules = {m.name for m in pkgutil.iter_modules(receiver.providers.__path__) if not m.name.startswith("_")}
    assert set(REGISTRY) == modules
    for name, provider in REGISTRY.items():
        assert provider.name == name and provider.problems() == []
    # The order people see them listed, which each record's `order` keeps.
    assert PROVIDER_NAMES == ("pixazo", "runware", "apiframe", "lumenfall", "oxen")


# Makes a package of the given modules (name: source): its path and its name.
MakePackage = Callable[[dict[str, str]], tuple[list[str], str]]

# A provider module as small as one can be: its record names pixazo's functions.
SIXTH = """
from receiver.providers import pixazo
from receiver.providers._record import Provider

PROVIDER = Provider(
    name="sixth", order=5, base_url="https://sixth.test", build_submit=pixazo.build_submit,
    submit_answer=pixazo.parse_submit, webhook=pixazo.parse_webhook,
)
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakePackage]:
    """Makes a package of the given modules, importable for this test only: its path and its name."""
    name = f"providers_{uuid.uuid4().hex}"
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(modules: dict[str, str]) -> tuple[list[str], str]:
        (tmp_path / name).mkdir()
        for module, source in {"__init__": "", **modules}.items():
            (tmp_path / name / f"{module}.py").write_text(source)
        return [str(tmp_path / name)], name

    yield make
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def test_a_new_module_is_a_new_provider(package: MakePackage) -> None:
    path, name = package({"sixth": SIXTH, "_helpers": "X = 1\n"})
    found = discover(path, name)
    assert list(found) == ["sixth"]  # `_helpers` is no provider
    assert found["sixth"].webhooks and not found["sixth"].polls


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("X = 1\n", "has no PROVIDER record"),
        (SIXTH.replace('name="sixth"', 'name="seventh"'), "named 'seventh'"),
        (SIXTH.replace("submit_answer=pixazo.parse_submit,", ""), "submit_answer is needed"),
    ],
)
def test_a_wrong_module_stops_the_registry(package: MakePackage, source: str, says: str) -> None:
    path, name = package({"sixth": source})
    with pytest.raises(RegistryError, match=says) as raised:
        discover(path, name)
    assert f"{name}.sixth" in str(raised.value)


def test_a_record_that_contradicts_itself_is_named() -> None:
    px = pixazo_module
    assert px.PROVIDER.problems() == []
    bad = Provider(
        name="Bad_Name", order=1, base_url="https://x.test", build_submit=px.build_submit, poll=px.build_poll
    )
    problems = bad.problems()
    assert any("lowercase" in p for p in problems)
    assert any("poll and poll_answer" in p for p in problems)
    assert any("submit_answer" in p for p in problems)
    unsigned = Provider(
        name="x",
        order=1,
        base_url="https://x.test",
        build_submit=px.build_submit,
        submit_answer=px.parse_submit,
        webhook=px.parse_webhook,
        webhook_secret="signing_key",
    )
    assert any("webhook_signature and webhook_secret" in p for p in unsigned.problems())
    assert any("neither 'api_key'" in p for p in unsigned.problems())


def test_each_provider_has_its_settings() -> None:
    names = set(setting_names())
    settings = Settings.model_validate({})  # the defaults, whatever the environment
    for name, provider in REGISTRY.items():
        expected = {f"RECEIVER_{name.upper()}_{key.upper()}" for key in provider.setting_keys}
        assert expected <= names
        assert settings.base_url(name) == provider.base_url.rstrip("/")
        assert settings.api_key(name) is None
        for key in provider.secret_settings:
            assert settings.provider_secret(name, key) is None
    assert {"RECEIVER_LUMENFALL_WEBHOOK_SECRET", "RECEIVER_LUMENFALL_TIMEOUT_S"} <= names
    with pytest.raises(KeyError):
        settings.provider_secret("pixazo", "base_url")  # not a secret


def test_provider_settings_by_keyword_and_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    given = Settings.model_validate({"pixazo_base_url": "http://127.0.0.1:9/", "oxen_api_key": "ox-key"})
    assert given.base_url("pixazo") == "http://127.0.0.1:9"
    key = given.api_key("oxen")
    assert key is not None and key.get_secret_value() == "ox-key" and "ox-key" not in repr(given)

    for name in [n for n in setting_names() if n.startswith("RECEIVER_")]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECEIVER_RUNWARE_BASE_URL", "http://runware.test/v1/")
    monkeypatch.setenv("RECEIVER_LUMENFALL_WEBHOOK_SECRET", "whsec_c2VjcmV0")
    monkeypatch.setenv("RECEIVER_APIFRAME_API_KEY", " ")  # empty is unset
    read = Settings()
    assert read.base_url("runware") == "http://runware.test/v1"
    secret = read.provider_secret("lumenfall", "webhook_secret")
    assert secret is not None and secret.get_secret_value() == "whsec_c2VjcmV0"
    assert read.api_key("apiframe") is None


def test_every_provider_secret_is_masked() -> None:
    values = {name: f"secret-of-{name}" for name in PROVIDER_SECRETS}
    assert {"lumenfall_webhook_secret", *(f"{n}_api_key" for n in REGISTRY)} <= set(values)
    settings = Settings.model_validate({k: SecretStr(v) for k, v in values.items()})
    masked = secrets_in_force(settings, Secrets(api_token="a" * 8, webhook_token="w" * 8, signing_secret="s" * 8))
    assert set(values.values()) <= set(masked)


def test_request_bodies_take_the_registry_names() -> None:
    for name in PROVIDER_NAMES:
        assert RegisterJob.model_validate({"provider": name, "provider_job_id": "j"}).provider == name
    with pytest.raises(ValidationError) as refused:
        Generate.model_validate({"provider": "midjourney", "prompt": "x"})
    (problem,) = [e for e in refused.value.errors() if e["loc"] == ("provider",)]
    quoted = [f"'{name}'" for name in PROVIDER_NAMES]
    assert problem["msg"] == f"Input should be {', '.join(quoted[:-1])} or {quoted[-1]}"


def test_openapi_lists_the_registry_names() -> None:
    schemas = document()["components"]["schemas"]
    assert schemas["Generate"]["properties"]["provider"]["enum"] == list(PROVIDER_NAMES)
    assert schemas["RegisterJob"]["properties"]["provider"]["enum"] == list(PROVIDER_NAMES)


def test_the_inspector_lists_what_stats_says() -> None:
    # The page hard-codes no provider: it lists what /v1/stats says, the registry in its order.
    assert PROVIDERS_LISTING == [{"name": p.name, "webhooks": p.name in WEBHOOK_PROVIDERS} for p in REGISTRY.values()]
    source = (Path(receiver.__file__).parent / "ui" / "app.js").read_text()
    for name in PROVIDER_NAMES:
        assert f'"{name}"' not in source
