"""All settings, read from the environment in one place (see CONTRACT.md, Settings)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from receiver.media_target import parse_media_url
from receiver.sinks.urls import SinkSpec, parse_sinks
from receiver.tunnels import CLOUDFLARED_METRICS_URLS, NGROK_API_URL
from receiver.urls import check_callback_url

DEFAULT_BASE_URLS: dict[str, str] = {
    "oxen": "https://hub.oxen.ai",
    "runware": "https://api.runware.ai/v1",
    "pixazo": "https://gateway.pixazo.ai",
    "apiframe": "https://api.apiframe.ai",
    "lumenfall": "https://api.lumenfall.ai/openai/v1",
}


class Settings(BaseSettings):
    """Typed settings. Unset tokens and the signing secret are filled from the store at startup."""

    model_config = SettingsConfigDict(env_prefix="RECEIVER_", extra="ignore", frozen=True, populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 8000
    # DATABASE_URL is the PaaS convention; RECEIVER_DATABASE_URL wins when both are set.
    database_url: str = Field(default="sqlite:///./receiver.db",
                              validation_alias=AliasChoices("RECEIVER_DATABASE_URL", "DATABASE_URL", "database_url"))
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
    log_format: str = "text"
    log_level: str = "INFO"
    # Not in the contract: uvicorn's access lines (see receiver.logs.AccessLines).
    access_log: Literal["all", "webhook-errors", "errors", "off"] = "webhook-errors"

    oxen_api_key: SecretStr | None = None
    runware_api_key: SecretStr | None = None
    pixazo_api_key: SecretStr | None = None
    apiframe_api_key: SecretStr | None = None
    lumenfall_api_key: SecretStr | None = None

    oxen_base_url: str = DEFAULT_BASE_URLS["oxen"]
    runware_base_url: str = DEFAULT_BASE_URLS["runware"]
    pixazo_base_url: str = DEFAULT_BASE_URLS["pixazo"]
    apiframe_base_url: str = DEFAULT_BASE_URLS["apiframe"]
    lumenfall_base_url: str = DEFAULT_BASE_URLS["lumenfall"]

    lumenfall_webhook_secret: SecretStr | None = None

    # Media mirroring (receiver.mirror): `off`, a directory, file:///dir or s3://bucket/prefix.
    media_url: str = "./receiver-media"
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
        "api_token", "webhook_token", "signing_secret", "public_url", "default_callback_url",
        "oxen_api_key", "runware_api_key", "pixazo_api_key", "apiframe_api_key",
        "lumenfall_api_key", "lumenfall_webhook_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("media_url")
    @classmethod
    def _media_url(cls, value: str) -> str:
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
        key: SecretStr | None = getattr(self, f"{provider}_api_key")
        return key

    def base_url(self, provider: str) -> str:
        return str(getattr(self, f"{provider}_base_url")).rstrip("/")


class Secrets:
    """The three secrets in force, each from the environment or generated once and stored."""

    __slots__ = ("api_token", "webhook_token", "signing_secret")

    def __init__(self, *, api_token: str, webhook_token: str, signing_secret: str) -> None:
        self.api_token = api_token
        self.webhook_token = webhook_token
        self.signing_secret = signing_secret

    def __repr__(self) -> str:  # never print secrets by accident
        return "Secrets(***)"


def webhook_url(settings: Settings, secrets: Secrets, provider: str) -> str:
    """The URL a provider must call: the one `receiver info` prints and submissions send."""
    return f"{settings.base_public_url}/webhooks/{provider}?token={secrets.webhook_token}"
