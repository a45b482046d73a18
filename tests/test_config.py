"""Settings: flags beat the environment, which beats the TOML file, which beats the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from happyhashtags.config import DEFAULT_DATABASE_URL, Settings, load_settings
from happyhashtags.errors import ConfigError

PASSWORD = "pw-9f8e7d-secret"


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "happyhashtags.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = load_settings({}, environ={})
    assert settings.database_url.get_secret_value() == DEFAULT_DATABASE_URL
    assert settings.happy == (":)",)
    assert (settings.bucket, settings.bucket_seconds, settings.session_gap) == (
        3600.0,
        3600,
        1800.0,
    )
    assert settings.retweets is True
    assert settings.source == "demo"


def test_flags_beat_env_beat_file(tmp_path: Path) -> None:
    config = _toml(
        tmp_path,
        'bucket = "1d"\nsession_gap = "10m"\nsource = "file.jsonl"\nhappy = ["yay"]\n'
        "flush_posts = 7\n",
    )
    env = {"HAPPYHASHTAGS_SESSION_GAP": "5m", "HAPPYHASHTAGS_SOURCE": "env.jsonl"}
    settings = load_settings({"source": "flag.jsonl"}, config_file=config, environ=env)
    assert settings.source == "flag.jsonl"  # flag
    assert settings.session_gap == 300.0  # env
    assert settings.bucket == 86400.0  # file
    assert settings.happy == ("yay",)  # file
    assert settings.flush_posts == 7  # file
    assert settings.retweets is True  # default


def test_flags_left_unset_do_not_override(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[happyhashtags]\nretweets = false\nhappy = [':D']\n")
    settings = load_settings({"retweets": None, "happy": ()}, config_file=config, environ={})
    assert settings.retweets is False
    assert settings.happy == (":D",)


def test_environment_names_are_case_insensitive_and_prefixed() -> None:
    settings = load_settings({}, environ={"happyhashtags_bucket": "15m", "BUCKET": "1d"})
    assert settings.bucket == 900.0


@pytest.mark.parametrize(
    ("value", "markers"),
    [(":) 😊 👍🏽", (":)", "😊", "👍🏽")), ('[":)", "so happy"]', (":)", "so happy"))],
)
def test_happy_markers_from_the_environment(value: str, markers: tuple[str, ...]) -> None:
    assert load_settings({}, environ={"HAPPYHASHTAGS_HAPPY": value}).happy == markers


def test_postgres_variables_build_the_database_url() -> None:
    env = {
        "POSTGRES_USER": "counter",
        "POSTGRES_PASSWORD": PASSWORD,
        "POSTGRES_DB": "happy",
        "POSTGRES_HOST": "db.internal",
        "POSTGRES_PORT": "6543",
    }
    settings = load_settings({}, environ=env)
    url = settings.database_url.get_secret_value()
    assert url == f"postgresql+psycopg://counter:{PASSWORD}@db.internal:6543/happy"
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.model_dump())


def test_postgres_defaults_and_precedence(tmp_path: Path) -> None:
    only_user = load_settings({}, environ={"POSTGRES_USER": "u"}).database_url.get_secret_value()
    assert only_user == "postgresql+psycopg://u@localhost:5432/u"
    config = _toml(tmp_path, 'database_url = "sqlite:///from-file.db"\n')
    # POSTGRES_* beats the file; HAPPYHASHTAGS_DATABASE_URL beats POSTGRES_*; the flag beats all.
    env = {"POSTGRES_USER": "u"}
    assert load_settings({}, config_file=config, environ=env).database_url.get_secret_value() == (
        "postgresql+psycopg://u@localhost:5432/u"
    )
    env["HAPPYHASHTAGS_DATABASE_URL"] = "sqlite:///from-env.db"
    assert load_settings({}, config_file=config, environ=env).database_url.get_secret_value() == (
        "sqlite:///from-env.db"
    )
    flagged = load_settings({"database_url": "sqlite:///flag.db"}, config_file=config, environ=env)
    assert flagged.database_url.get_secret_value() == "sqlite:///flag.db"


def test_a_bad_postgres_port_is_a_config_error_without_the_password() -> None:
    env = {"POSTGRES_PASSWORD": PASSWORD, "POSTGRES_PORT": "fivefour"}
    with pytest.raises(ConfigError, match="POSTGRES_PORT") as caught:
        load_settings({}, environ=env)
    assert PASSWORD not in str(caught.value)


def test_invalid_values_name_the_setting_and_hide_secrets(tmp_path: Path) -> None:
    env = {"HAPPYHASHTAGS_DATABASE_URL": f"postgresql://u:{PASSWORD}@h/d"}
    with pytest.raises(ConfigError) as caught:
        load_settings({"bucket": "soon"}, environ=env)
    message = str(caught.value)
    assert "bucket" in message
    assert "invalid duration" in message
    assert PASSWORD not in message
    with pytest.raises(ConfigError, match="whole number"):
        load_settings({"bucket": "1.5s"}, environ={})
    with pytest.raises(ConfigError, match="flush_posts"):
        load_settings({"flush_posts": 0}, environ={})


def test_config_file_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings({}, config_file=tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, config_file=_toml(tmp_path, "bucket = = 1"), environ={})
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({}, config_file=_toml(tmp_path, "bukket = '1h'"), environ={})
    with pytest.raises(ConfigError, match="finite"):
        load_settings({}, config_file=_toml(tmp_path, "session_gap = nan"), environ={})


def test_x_and_bluesky_aliases() -> None:
    env = {
        "X_BEARER_TOKEN": "tok-123",
        "BLUESKY_JETSTREAM_URL": "wss://a.example/subscribe, wss://b.example/subscribe",
        "X_API_BASE_URL": "http://127.0.0.1:9",
    }
    settings = load_settings({}, environ=env)
    assert settings.x_bearer_token is not None
    assert settings.x_bearer_token.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(settings)
    assert settings.bluesky_urls == ("wss://a.example/subscribe", "wss://b.example/subscribe")
    assert settings.x_api_base_url == "http://127.0.0.1:9"
    assert load_settings({}, environ={"API_BEARER_TOKEN": "t2"}).x_bearer_token is not None


def test_building_settings_directly_ignores_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HAPPYHASHTAGS_BUCKET", "1d")
    monkeypatch.setenv("POSTGRES_USER", "someone")
    settings = Settings()
    assert settings.bucket == 3600.0
    assert settings.database_url.get_secret_value() == DEFAULT_DATABASE_URL


def test_a_postgres_password_with_url_characters_survives_quoting() -> None:
    from sqlalchemy.engine import make_url

    tricky = "p@ss:w/rd?%#"
    env = {"POSTGRES_USER": "u", "POSTGRES_PASSWORD": tricky, "POSTGRES_HOST": "h"}
    url = make_url(load_settings({}, environ=env).database_url.get_secret_value())
    assert (url.username, url.password, url.host, url.database) == ("u", tricky, "h", "u")
