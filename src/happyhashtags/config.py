"""Settings: one pydantic-settings model. Flags beat the environment, which beats the config file.

Only the CLI builds `Settings` from the environment; the library's constructors take plain
keyword arguments.

The database URL is taken from, in order: ``--database``, ``HAPPYHASHTAGS_DATABASE_URL``, the
seed project's ``POSTGRES_USER``/``POSTGRES_PASSWORD``/``POSTGRES_DB``/``POSTGRES_HOST``/
``POSTGRES_PORT`` variables, the config file's ``database_url``, and the default
``sqlite:///happyhashtags.db``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from sqlalchemy.engine import URL

from happyhashtags.errors import ConfigError
from happyhashtags.happy import DEFAULT_MARKERS
from happyhashtags.timeutil import parse_duration

__all__ = ["DEFAULT_DATABASE_URL", "Settings", "XRule", "load_settings"]

DEFAULT_DATABASE_URL = "sqlite:///happyhashtags.db"
ENV_PREFIX = "HAPPYHASHTAGS_"


class XRule(BaseModel):
    """One filtered-stream rule: a query and an optional tag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: str
    tag: str | None = None


class Settings(BaseSettings):
    """Everything a run can be told. Field names are the config file's keys; the environment
    variables are the names in capitals with the ``HAPPYHASHTAGS_`` prefix."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
        populate_by_name=True,
    )

    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="SQLAlchemy URL of the database (may hold a password, so it is secret).",
    )
    source: str = Field(default="demo", description="What to read: demo, -, a file or glob, ...")
    happy: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_MARKERS,
        description="Happy markers (env: a JSON list, or markers separated by spaces).",
    )
    bucket: float = Field(default=3600.0, description="Bucket size (a duration, e.g. 1h).")
    session_gap: float = Field(default=1800.0, description="Anti-spam session gap; 0 = off.")
    allowed_lateness: float = Field(
        default=3600.0, description="How late a post may arrive and still join its session."
    )
    retweets: bool = Field(default=True, description="Count retweets as posts of the retweeter.")
    limit: int | None = Field(default=None, ge=1, description="Stop after this many posts.")
    workers: int = Field(
        default=1, ge=1, description="Counting processes (posts spread by author)."
    )
    flush_posts: int = Field(default=100_000, ge=1, description="Flush counts every N posts...")
    flush_interval: float = Field(default=5.0, description="... or every T seconds.")
    dedupe_ids: int = Field(default=1_000_000, ge=0, description="Recent post ids remembered.")
    max_sessions: int = Field(
        default=500_000, ge=1, description="Live anti-spam sessions kept in memory at most."
    )
    max_session_keys: int = Field(
        default=2_000_000, ge=1, description="Hashtags remembered by all sessions at most."
    )
    demo_count: int = Field(default=20_000, ge=1, description="Posts in the demo stream.")
    demo_seed: int = Field(default=42, description="Seed of the demo stream.")

    # -- X API v2 (--source x-filtered / x-sample) -----------------------------------------------
    x_bearer_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "x_bearer_token", "HAPPYHASHTAGS_X_BEARER_TOKEN", "X_BEARER_TOKEN", "API_BEARER_TOKEN"
        ),
        description="App-only bearer token [env X_BEARER_TOKEN or API_BEARER_TOKEN].",
    )
    x_token_file: Path | None = Field(default=None, description="File holding the bearer token.")
    x_api_base_url: str = Field(
        default="https://api.x.com",
        validation_alias=AliasChoices(
            "x_api_base_url", "HAPPYHASHTAGS_X_API_BASE_URL", "X_API_BASE_URL"
        ),
        description="Base URL of the X API [env X_API_BASE_URL].",
    )
    x_tweet_fields: str = "created_at,author_id,entities,referenced_tweets,lang,note_tweet"
    x_expansions: str = "author_id,referenced_tweets.id"
    x_rules: tuple[XRule, ...] = Field(
        default=(), description="Filtered-stream rules for x-rules sync."
    )
    x_rule_max_length: int = Field(default=512, ge=1, description="1024 on pay-per-use access.")
    x_stall_timeout: float = Field(
        default=25.0, description="No data or keep-alive for this long: reconnect."
    )

    # -- Bluesky Jetstream (--source bluesky) ----------------------------------------------------
    bluesky_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(
            "wss://jetstream2.us-east.bsky.network/subscribe",
            "wss://jetstream1.us-east.bsky.network/subscribe",
        ),
        validation_alias=AliasChoices(
            "bluesky_urls", "HAPPYHASHTAGS_BLUESKY_URLS", "BLUESKY_JETSTREAM_URL"
        ),
        description="Jetstream URLs, tried in order for fail-over [env BLUESKY_JETSTREAM_URL].",
    )
    bluesky_compress: bool = Field(default=False, description="Ask Jetstream for zstd frames.")
    bluesky_zstd_dictionary: Path | None = Field(
        default=None, description="Jetstream's zstd dictionary file; needed by bluesky_compress."
    )
    bluesky_stall_timeout: float = Field(
        default=30.0, description="No Jetstream message for this long: reconnect."
    )

    # -- NATS JetStream queue (ingest / process / status) ----------------------------------------
    queue: str | None = Field(default=None, description="nats://HOST:PORT/STREAM")
    consumer: str = Field(default="happyhashtags", description="Durable consumer name of process.")
    queue_replicas: int = Field(
        default=1, ge=1, le=5, description="Stream replicas (3 in production)."
    )
    queue_max_age: float = Field(default=7 * 86400.0, description="Stream retention (a duration).")
    spool_dir: Path = Field(
        default=Path(".happyhashtags-spool"), description="Ingest's local journal."
    )
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 20, description="Journal size cap.")
    posts_per_message: int = Field(
        default=128,
        ge=1,
        le=10_000,
        description="Lines ingest puts in one JetStream message at most (1: one post each).",
    )

    @field_validator(
        "bucket",
        "session_gap",
        "allowed_lateness",
        "flush_interval",
        "x_stall_timeout",
        "bluesky_stall_timeout",
        "queue_max_age",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("bucket")
    @classmethod
    def _whole_bucket(cls, value: float) -> float:
        if value < 1 or value != int(value):
            raise ValueError("the bucket size must be a whole number of seconds, at least 1s")
        return value

    @field_validator("happy", mode="before")
    @classmethod
    def _markers(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return tuple(json.loads(value))
                except (ValueError, TypeError):
                    raise ValueError("happy markers: not a valid JSON list") from None
            return tuple(value.split())
        return value

    @field_validator("bluesky_urls", mode="before")
    @classmethod
    def _url_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(u.strip() for u in value.split(",") if u.strip())
        return value

    @property
    def bucket_seconds(self) -> int:
        return int(self.bucket)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `load_settings` assembles the sources itself; this keeps Settings() from reading
        # the environment when a library user builds one directly.
        return (init_settings,)


class _PostgresEnvSource(InitSettingsSource):
    """``database_url`` from the seed project's POSTGRES_* variables."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        keys = (
            "POSTGRES_USER",
            "POSTGRES_PASSWORD",
            "POSTGRES_DB",
            "POSTGRES_HOST",
            "POSTGRES_PORT",
        )
        values: dict[str, Any] = {}
        if any(environ.get(k) for k in keys):
            port = environ.get("POSTGRES_PORT") or "5432"
            if not port.isdigit():
                raise ConfigError(f"POSTGRES_PORT must be a number, got {port!r}")
            url = URL.create(
                "postgresql+psycopg",
                username=environ.get("POSTGRES_USER") or None,
                password=environ.get("POSTGRES_PASSWORD") or None,
                host=environ.get("POSTGRES_HOST") or "localhost",
                port=int(port),
                database=environ.get("POSTGRES_DB") or environ.get("POSTGRES_USER") or "postgres",
            )
            values["database_url"] = url.render_as_string(hide_password=False)
        super().__init__(settings_cls, values)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # Allow the keys at the top level or under [happyhashtags].
    section = data.get("happyhashtags", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [happyhashtags] must be a table")
    return dict(section)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    settings_cls: type[Settings] = Settings,
) -> Settings:
    """Build settings from flags (None values are ignored), the environment and a TOML file.

    Raises:
        ConfigError: a value is invalid; the message names the setting and never shows a secret.
    """
    env_vars: dict[str, str] = dict(environ or {})
    init = {k: v for k, v in (flags or {}).items() if v is not None and v != ()}
    file_values = _read_config_file(config_file) if config_file is not None else {}

    class _Loader(settings_cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            env = EnvSettingsSource(settings_cls, env_prefix=ENV_PREFIX, case_sensitive=False)
            env.env_vars = {k.lower(): v for k, v in env_vars.items()}
            return (
                InitSettingsSource(settings_cls, init),
                env,
                _PostgresEnvSource(settings_cls, env_vars),
                InitSettingsSource(settings_cls, file_values),
            )

    try:
        loaded = _Loader()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin=config_file)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None
    return settings_cls.model_validate(loaded.model_dump(), context=None)


def _describe(exc: ValidationError, *, origin: Path | None) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting" + (f" (in {origin})" if origin else "")
        problems.append(f"{where}: {message}")
    return "invalid settings: " + "; ".join(problems)
