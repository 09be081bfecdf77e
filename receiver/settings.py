"""All settings, read from the environment in one place (README.md, Settings)."""

from __future__ import annotations

import base64
import binascii
import difflib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, create_model, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from receiver.media.target import parse_media_url
from receiver.providers import REGISTRY, RegistryError
from receiver.relay.tunnels import CLOUDFLARED_METRICS_URLS, NGROK_API_URL
from receiver.sinks.urls import SinkSpec, parse_sinks
from receiver.util.urls import check_callback_url

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENV_PREFIX = "RECEIVER_"
# Variables of the test suite and CI, not of the receiver: known, so never reported as misspelt settings.
TEST_ONLY_PREFIXES = ("RECEIVER_TEST_", "RECEIVER_REQUIRE_")
TEST_ONLY_NAMES = frozenset({"RECEIVER_CHROMIUM", "RECEIVER_SCREENSHOT"})


def check_signing_secret(secret: str) -> None:
    """ValueError unless `secret` is `whsec_` followed by non-empty base64 (what Standard Webhooks signs with)."""
    body = secret.removeprefix("whsec_")
    if body == secret or not body:
        raise ValueError("must be whsec_ followed by base64")
    try:
        base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be whsec_ followed by base64 (the part after whsec_ is not base64)") from None


def _provider_settings() -> dict[str, Any]:
    """Each provider's settings, as fields: `{name}_api_key`, `{name}_base_url` (default: its adapter's
    BASE_URL) and a secret field for each of its record's `secret_settings` (`lumenfall_webhook_secret`)."""
    fields: dict[str, Any] = {}
    for name, provider in REGISTRY.items():
        fields[f"{name}_api_key"] = (SecretStr | None, None)
        fields[f"{name}_base_url"] = (str, provider.base_url)
        for key in provider.secret_settings:
            fields[f"{name}_{key}"] = (SecretStr | None, None)
    return fields


# Every provider's secrets, as field names: its API key and the others its record declares.
PROVIDER_SECRETS: tuple[str, ...] = tuple(
    f"{name}_{key}" for name, p in REGISTRY.items() for key in ("api_key", *p.secret_settings)
)

# The per-provider fields are made from the registry, so that adding a provider adds its settings. They are
# ordinary fields of the model (a base class made by pydantic), so the environment variables
# (`RECEIVER_PIXAZO_API_KEY`, …), keyword arguments (`Settings(pixazo_base_url=…)`), validation errors and
# `setting_names` treat them as every other setting. mypy does not know them: read them with
# `Settings.api_key`, `.base_url` and `.provider_secret`.
if TYPE_CHECKING:
    _ProviderSettings = BaseSettings
else:
    _ProviderSettings = create_model("_ProviderSettings", __base__=BaseSettings, **_provider_settings())


class Settings(_ProviderSettings):
    """Typed settings. Unset tokens and the signing secret are filled from the store at startup."""

    model_config = SettingsConfigDict(env_prefix="RECEIVER_", extra="ignore", frozen=True, populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 8000
    # DATABASE_URL is the PaaS convention; RECEIVER_DATABASE_URL wins when both are set.
    database_url: str = Field(
        default="sqlite:///./receiver.db",
        validation_alias=AliasChoices("RECEIVER_DATABASE_URL", "DATABASE_URL", "database_url"),
    )
    api_token: SecretStr | None = None
    webhook_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    public_url: str | None = None
    default_callback_url: str | None = None
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    callback_timeout_s: float = Field(default=15.0, gt=0)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    reconcile_after_s: float = Field(default=300.0, ge=0)
    job_timeout_s: float = Field(default=86400.0, gt=0)
    # Not in the contract: how long a submit or status poll may take, and Lumenfall's synchronous generation.
    provider_timeout_s: float = Field(default=30.0, gt=0)
    lumenfall_timeout_s: float = Field(default=180.0, gt=0)
    # Not in the contract: looking for a local ngrok/cloudflared tunnel while public_url is unset (tunnels.py).
    tunnel_discovery: bool = True
    ngrok_api_url: str = NGROK_API_URL
    cloudflared_metrics_urls: Annotated[tuple[str, ...], NoDecode] = CLOUDFLARED_METRICS_URLS
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    # Not in the contract: uvicorn's access lines (see receiver.logs.AccessLines).
    access_log: Literal["all", "webhook-errors", "errors", "off"] = "webhook-errors"

    # Media mirroring (receiver.media.mirror): `off`, `db`, a directory, file:///dir or s3://bucket/prefix;
    # unset: `db` with PostgreSQL, ./receiver-media with SQLite (receiver.media.target.default_media_url).
    media_url: str | None = None
    media_retention_days: float = Field(default=30.0, ge=0)  # 0 keeps objects forever; floats allowed
    media_max_bytes: int = Field(default=52_428_800, gt=0)
    media_allow_private: bool = False

    # Pipelines (receiver.sinks): comma-separated nats://, redis:// and amqp:// URLs.
    sinks: str = ""

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            return tuple(float(p) for p in parts)
        return value

    @field_validator("cloudflared_metrics_urls", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return tuple(p.strip() for p in value.split(",") if p.strip()) if isinstance(value, str) else value

    @field_validator("retry_schedule")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(v < 0 for v in value):
            raise ValueError("retry delays must be >= 0")
        return value

    @field_validator(
        "api_token",
        "webhook_token",
        "signing_secret",
        "public_url",
        "default_callback_url",
        *PROVIDER_SECRETS,
        mode="before",
        check_fields=False,  # the provider fields are the base class's
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("signing_secret")
    @classmethod
    def _signing_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_signing_secret(value.get_secret_value())
        return value

    @field_validator("media_url")
    @classmethod
    def _media_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_media_url(value)  # raises ValueError naming the problem
        return value

    @field_validator("sinks")
    @classmethod
    def _sinks(cls, value: str) -> str:
        parse_sinks(value)  # raises ValueError naming the bad URL, its password hidden
        return value

    @property
    def sink_specs(self) -> tuple[SinkSpec, ...]:
        return parse_sinks(self.sinks)

    @field_validator("default_callback_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return check_callback_url(value)

    @property
    def public_url_unreachable(self) -> bool:
        """No public URL set and bound to every interface: `http://0.0.0.0:…` reaches no provider."""
        return self.public_url is None and self.host.strip("[]") in ("0.0.0.0", "::")

    @property
    def base_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def api_key(self, provider: str) -> SecretStr | None:
        """`RECEIVER_{PROVIDER}_API_KEY`."""
        return self.provider_secret(provider, "api_key")

    def base_url(self, provider: str) -> str:
        """`RECEIVER_{PROVIDER}_BASE_URL`, by default the adapter's `BASE_URL`."""
        if provider not in REGISTRY:
            raise KeyError(f"no provider {provider!r}")
        return str(getattr(self, f"{provider}_base_url")).rstrip("/")

    def provider_secret(self, provider: str, key: str) -> SecretStr | None:
        """`RECEIVER_{PROVIDER}_{KEY}`: the provider's API key (`api_key`) or a secret its record declares."""
        if key not in ("api_key", *REGISTRY[provider].secret_settings):
            raise KeyError(f"{provider} has no secret setting {key!r}")
        value: SecretStr | None = getattr(self, f"{provider}_{key}")
        return value

    def provider_secrets(self) -> list[SecretStr]:
        """Every provider secret that is set (to be masked in logs)."""
        values: list[SecretStr | None] = [getattr(self, name) for name in PROVIDER_SECRETS]
        return [v for v in values if v is not None]


def _provider_settings_are_new() -> None:
    """A provider's setting must not be a setting of the receiver's own (`lumenfall_timeout_s` is one)."""
    own = set(Settings.__annotations__)
    if clash := sorted(own & set(_provider_settings())):
        raise RegistryError(f"provider settings named as the receiver's own: {', '.join(clash)}")


_provider_settings_are_new()


def setting_names() -> list[str]:
    """Every environment variable that is a setting, from the model itself (fields and their aliases)."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(f"{ENV_PREFIX}{name.upper()}")
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice).upper() for choice in alias.choices if str(choice).isupper()}
    return sorted(names)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each RECEIVER_ variable that is not a setting (a typo, or one this version lacks),
    naming the closest setting; the test suite's own variables are left alone."""
    known = setting_names()
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if (
            not upper.startswith(ENV_PREFIX)
            or upper in known
            or upper in TEST_ONLY_NAMES
            or upper.startswith(TEST_ONLY_PREFIXES)
        ):
            continue
        closest = difflib.get_close_matches(upper, known, n=1, cutoff=0.0)[0]
        problems.append(f"{name} is not a setting and is ignored: did you mean {closest}?")
    return problems


def warn_unknown_variables(environ: Mapping[str, str], log: logging.Logger) -> None:
    for problem in unknown_variables(environ):
        log.warning("%s", problem)


class Secrets:
    """The three secrets in force, each from the environment or generated once and stored."""

    __slots__ = ("api_token", "signing_secret", "webhook_token")

    def __init__(self, *, api_token: str, webhook_token: str, signing_secret: str) -> None:
        self.api_token = api_token
        self.webhook_token = webhook_token
        self.signing_secret = signing_secret

    def __repr__(self) -> str:  # never print secrets by accident
        return "Secrets(***)"


def webhook_url(settings: Settings, secrets: Secrets, provider: str) -> str:
    """The URL a provider must call: the one `receiver info` prints and submissions send."""
    return f"{settings.base_public_url}/webhooks/{provider}?token={secrets.webhook_token}"
