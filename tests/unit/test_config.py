"""Settings: defaults, file < env < flags precedence, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime.config import DEMO_SECRET, Namespace, Settings, load_settings, validate
from realtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRET = {"REALTIME_SECRET": "s" * 32}


def test_defaults_match_the_contract() -> None:
    """Built-in defaults are the contract's table."""
    s = load_settings(env=SECRET)
    assert (s.host, s.port, s.broker_url, s.workers) == ("127.0.0.1", 8888, "memory://", 1)
    assert s.max_connections == 50000
    assert s.max_send_buffer == 1048576
    assert s.api_key is None
    assert s.namespaces["leaderboard"] == Namespace("public", 500, presence=True)
    assert s.namespaces["user"].access == "user"
    assert s.namespaces["submission"].access == "granted"
    assert s.namespaces["contest"].coalesce_ms == 0


def test_shipped_config_file_equals_the_defaults() -> None:
    """config/realtime.toml lists every key with its default value."""
    from_file = load_settings(ROOT / "config" / "realtime.toml", env=SECRET)
    assert from_file == load_settings(env=SECRET)


def test_env_overrides_file_and_flags_override_env(tmp_path: Path) -> None:
    """Precedence: file < environment < flags."""
    conf = tmp_path / "rt.toml"
    conf.write_text(
        '[server]\nport = 9000\nhost = "0.0.0.0"\n[auth]\nsecret = "' + "f" * 40 + '"\n'
    )
    s = load_settings(conf, env={"REALTIME_PORT": "9100"}, overrides={"port": 9200})
    assert (s.port, s.host, s.secret) == (9200, "0.0.0.0", "f" * 40)
    s = load_settings(conf, env={"REALTIME_PORT": "9100"})
    assert s.port == 9100


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"REALTIME_PORT": "eighty"}, "port"),
        ({"REALTIME_PORT": "70000"}, "port"),
        ({"REALTIME_BROKER_URL": "kafka://x"}, "broker_url"),
        ({"REALTIME_BROKER_URL": "redis://"}, "broker_url"),
        ({"REALTIME_MAX_SEND_BUFFER": "10"}, "max_send_buffer"),
        ({"REALTIME_ALLOWED_ORIGINS": "not-an-origin"}, "allowed_origins"),
        ({"REALTIME_REDIS_URL": "redis://h"}, "redis_url"),
        ({"REALTIME_DEV": "maybe"}, "dev"),
    ],
)
def test_bad_value_names_the_setting(env: dict[str, str], needle: str) -> None:
    """A bad value raises ConfigError whose one line names the setting."""
    with pytest.raises(ConfigError) as info:
        load_settings(env={**SECRET, **env})
    assert str(info.value).startswith(needle)
    assert "\n" not in str(info.value)


def test_secret_required_outside_dev() -> None:
    """No secret: refused, unless --dev/--demo, which use a built-in one."""
    with pytest.raises(ConfigError, match="secret"):
        load_settings(env={})
    assert load_settings(env={}, overrides={"dev": True}).secret == DEMO_SECRET


def test_unknown_file_key_and_bad_namespace(tmp_path: Path) -> None:
    """Unknown keys and malformed namespaces are refused."""
    conf = tmp_path / "rt.toml"
    conf.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_settings(conf, env=SECRET)
    conf.write_text('[namespaces.chat]\naccess = "everyone"\n')
    with pytest.raises(ConfigError, match=r"namespaces\.chat"):
        load_settings(conf, env=SECRET)


def test_namespaces_from_file_replace_defaults(tmp_path: Path) -> None:
    """A [namespaces.*] table defines the namespaces."""
    conf = tmp_path / "rt.toml"
    conf.write_text('[namespaces.chat]\naccess = "user"\ncoalesce_ms = 0\n')
    s = load_settings(conf, env=SECRET)
    assert dict(s.namespaces) == {"chat": Namespace("user", 0)}


def test_validate_keeps_a_valid_settings_object() -> None:
    """Settings built directly validate too."""
    s = validate(Settings(secret="x" * 32))
    assert s.secret == "x" * 32
