"""Bridge logic without a network: system checks, tokens, envelopes, settings."""

from __future__ import annotations

from typing import Any

import bridge_sample_settings as sample
import jwt
import pytest
from django.core import checks

from django_bridge import realtime_token
from django_bridge.checks import check_realtime_settings
from django_bridge.conf import get_settings, http_base_from_ws
from django_bridge.publishing import make_envelope
from django_bridge.transports import envelope_json
from realtime.errors import PublishError


def _ids(settings: Any, **realtime: Any) -> set[str]:
    settings.REALTIME = {**sample.REALTIME, **realtime}
    return {m.id for m in check_realtime_settings() if m.level >= checks.ERROR}


def test_checks_pass_for_valid_settings(settings: Any) -> None:
    """A complete REALTIME setting produces no errors."""
    assert _ids(settings) == set()


def test_checks_report_missing_secret(settings: Any) -> None:
    """A missing secret is error E001."""
    assert _ids(settings, SECRET=None) == {"django_bridge.E001"}


def test_checks_report_short_secret(settings: Any) -> None:
    """A secret the server would refuse (under 32 characters) is error E001."""
    assert _ids(settings, SECRET="short") == {"django_bridge.E001"}


def test_checks_report_bad_broker_url(settings: Any) -> None:
    """An unknown broker scheme is error E002."""
    assert _ids(settings, BROKER_URL="kafka://x:1") == {"django_bridge.E002"}


def test_checks_require_api_key_for_http(settings: Any) -> None:
    """The http transport without an API key is error E003."""
    assert _ids(settings, BROKER_URL="http://127.0.0.1:8888", API_KEY=None) == {
        "django_bridge.E003"
    }


def test_checks_report_bad_browser_url(settings: Any) -> None:
    """A URL that is not ws(s):// is error E004."""
    assert _ids(settings, URL="http://127.0.0.1:8888/ws") == {"django_bridge.E004"}


def test_checks_report_non_bool_flags(settings: Any) -> None:
    """OUTBOX, RAISE_ON_ERROR and CHECK_NAMESPACES must be bools (E012)."""
    assert _ids(settings, CHECK_NAMESPACES="no") == {"django_bridge.E012"}
    assert _ids(settings, OUTBOX=1, CHECK_NAMESPACES=False) == {"django_bridge.E012"}


def test_probe_names_broker_mismatches_from_info(settings: Any) -> None:
    """broker_mismatch: each disagreement /api/info reveals, and none when they agree."""
    from django_bridge.probe import broker_mismatch

    settings.REALTIME = {**sample.REALTIME, "PREFIX": "rt:"}
    site = get_settings()  # redis transport, prefix rt:
    redis_info = {"broker": "redis", "store": "redis", "redis_prefix": "rt:"}
    assert broker_mismatch(site, redis_info) is None
    assert "memory://" in str(broker_mismatch(site, {"broker": "memory", "store": "memory"}))
    other = broker_mismatch(site, {**redis_info, "redis_prefix": "x:"})
    assert "REALTIME['PREFIX'] is 'rt:'" in str(other)
    amqp = {"broker": "amqp", "store": "redis", "amqp_exchange": "realtime"}
    assert "listens on amqp" in str(broker_mismatch(site, amqp))
    settings.REALTIME = {**sample.REALTIME, "BROKER_URL": "amqp://guest:guest@127.0.0.1/%2F"}
    assert "REALTIME['REDIS_URL'] is unset" in str(broker_mismatch(get_settings(), amqp))
    settings.REALTIME = {**settings.REALTIME, "REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert broker_mismatch(get_settings(), amqp) is None
    memory_store = {**amqp, "store": "memory"}
    assert "no REALTIME_REDIS_URL" in str(broker_mismatch(get_settings(), memory_store))


def test_namespace_check_off_starts_no_fetch(settings: Any) -> None:
    """CHECK_NAMESPACES=False: publishing never reads /api/info."""
    from django_bridge import serverinfo

    settings.REALTIME = {**sample.REALTIME, "CHECK_NAMESPACES": False}
    serverinfo.note_channel("notify:1")
    state = serverinfo._current()
    assert (state.fetching, state.seen, state.namespaces) == (False, set(), None)


def test_checks_report_missing_setting(settings: Any) -> None:
    """No REALTIME setting at all is error E000."""
    del settings.REALTIME
    assert {m.id for m in check_realtime_settings()} == {"django_bridge.E000"}


def test_token_carries_sub_exp_and_channels(settings: Any) -> None:
    """realtime_token signs sub (a string), exp = now + ttl and the channels claim."""
    settings.REALTIME = sample.REALTIME
    token = realtime_token(42, channels=["submission:7"], ttl=60)
    claims = jwt.decode(token, sample.SECRET, algorithms=["HS256"])
    assert claims["sub"] == "42"
    assert claims["channels"] == ["submission:7"]
    assert 55 <= claims["exp"] - claims["iat"] <= 60


def test_settings_cache_follows_override(settings: Any) -> None:
    """Changing REALTIME (setting_changed) resets the cached settings."""
    settings.REALTIME = {**sample.REALTIME, "PREFIX": "one:"}
    assert get_settings().prefix == "one:"
    settings.REALTIME = {**sample.REALTIME, "PREFIX": "two:"}
    assert get_settings().prefix == "two:"


def test_server_url_derived_from_ws_url() -> None:
    """wss://host/rt/ws maps to https://host/rt for /healthz and /static."""
    assert http_base_from_ws("wss://rt.example.com/rt/ws") == "https://rt.example.com/rt"


def test_envelope_rejects_bad_channel() -> None:
    """publish() validation refuses a name that breaks the channel pattern."""
    with pytest.raises(PublishError):
        make_envelope("no namespace", "t", {})


def test_envelope_json_keeps_data_bytes() -> None:
    """The wire envelope splices the data JSON in unchanged and carries an id."""
    env = make_envelope("contest:1", "t", {"b": 1, "a": [1.5, "x"]})
    decoded = __import__("orjson").loads(envelope_json(env))
    assert decoded["data"] == {"b": 1, "a": [1.5, "x"]}
    assert decoded["id"] == env.id and len(env.id) == 32
