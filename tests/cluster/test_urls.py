"""Redis URL forms for the server and the bridge: parsed, or refused with one clear line."""

from __future__ import annotations

import pytest

from realtime.brokers import redis_urls
from realtime.config import load_settings
from realtime.errors import ConfigError


def test_cluster_url_seeds_and_tls() -> None:
    t = redis_urls.parse("rediss+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001/")
    assert (t.kind, t.tls, t.sharded) == ("cluster", True, True)
    assert t.nodes == (("10.0.0.1", 7000), ("::1", 7001))
    assert (t.username, t.password) == ("u", "p@ss")


def test_sentinel_url_service_db_and_passwords() -> None:
    t = redis_urls.parse(
        "redis+sentinel://:secret@s1:26379,s2:26380/mymaster/3"
        "?sentinel_password=sp&sentinel_username=su"
    )
    assert (t.kind, t.service, t.db, t.sharded) == ("sentinel", "mymaster", 3, False)
    assert t.nodes == (("s1", 26379), ("s2", 26380))
    assert (t.username, t.password) == (None, "secret")
    assert (t.sentinel_username, t.sentinel_password) == ("su", "sp")
    assert redis_urls.parse("redis+sentinel://s1:26379/mymaster").db == 0


def test_single_url_unchanged() -> None:
    t = redis_urls.parse("redis://127.0.0.1:6380/2")
    assert (t.kind, t.nodes, t.db) == ("single", (("127.0.0.1", 6380),), 2)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://", "no HOST:PORT"),
        ("redis+cluster://a:7000,b", "'b' is not HOST:PORT"),
        ("redis+cluster://a:70000", "bad port"),
        ("redis+cluster://a:7000/0", "seed nodes only"),
        ("redis+cluster://a:7000?x=1", "seed nodes only"),
        ("redis+sentinel://s:26379", "needs the service name"),
        ("redis+sentinel://s:26379/", "needs the service name"),
        ("redis+sentinel://s:26379/m/x", "'x' is not a number"),
        ("redis+sentinel://s:26379/m/1/2", "/SERVICE_NAME[/DB]"),
        ("redis+sentinel://s:26379/m?password=x", "unknown option 'password'"),
        ("redis://a:1,b:2/0", "several hosts need redis+cluster://"),
        ("redis://a:1/x", "'x' is not a number"),
    ],
)
def test_bad_urls_one_line(url: str, says: str) -> None:
    with pytest.raises(redis_urls.RedisURLError) as info:
        redis_urls.parse(url)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_server_config_accepts_and_refuses() -> None:
    env = {"REALTIME_SECRET": "x" * 32}
    ok = load_settings(env={**env, "REALTIME_BROKER_URL": "redis+cluster://a:7000,b:7001"})
    assert ok.broker_url.startswith("redis+cluster://")
    amqp = {"REALTIME_BROKER_URL": "amqp://h/", "REALTIME_REDIS_URL": "redis+sentinel://s:1/m"}
    assert load_settings(env={**env, **amqp}).redis_url == "redis+sentinel://s:1/m"
    with pytest.raises(ConfigError) as info:
        load_settings(
            env={**env, "REALTIME_BROKER_URL": "redis+sentinel://:pw@s:26379?sentinel_password=z"}
        )
    message = str(info.value)
    assert message.startswith("broker_url: a sentinel URL needs the service name")
    assert "pw" not in message and "z" not in message.split("in ")[-1]  # no secrets echoed
    with pytest.raises(ConfigError, match="redis_url: bad port"):
        load_settings(env={**env, "REALTIME_BROKER_URL": "amqp://h/",
                           "REALTIME_REDIS_URL": "redis+cluster://a:x"})  # fmt: skip


def test_bridge_check_names_the_problem() -> None:
    """The bridge's system check (E002/E005) reports a bad Redis URL in one line."""
    from django_bridge.checks import _redis_url_errors

    assert _redis_url_errors("BROKER_URL", "redis+cluster://a:1,b:2", "E002") == []
    errors = _redis_url_errors("BROKER_URL", "redis+sentinel://:pw@a:1", "E002")
    assert [e.id for e in errors] == ["django_bridge.E002"]
    assert "needs the service name" in errors[0].msg and "pw" not in errors[0].msg


def test_realtime_check_compares_cluster_and_sentinel_prefixes() -> None:
    """realtime_check (django_bridge.probe) reads /api/info of a cluster or Sentinel server:
    the same kind and prefix agree; another prefix, or one Redis against a cluster, is named."""
    from django_bridge import conf
    from django_bridge.probe import broker_mismatch, history_mismatch

    def site(url: str) -> conf.BridgeSettings:
        return conf._parse({**conf.DEFAULTS, "BROKER_URL": url, "PREFIX": "rt:"})

    history = {"size": 100, "ttl": 600, "meta_ttl": 86400}
    for url, kind in (
        ("rediss+cluster://a:7000,b:7001", "redis+cluster"),
        ("redis+sentinel://s:26379/m/0", "redis+sentinel"),
    ):
        info = {"broker": kind, "store": kind, "redis_prefix": "rt:", "history": history}
        assert broker_mismatch(site(url), info) is None
        other = broker_mismatch(site(url), {**info, "redis_prefix": "x:"})
        assert "REALTIME['PREFIX'] is 'rt:'" in str(other)
        assert "HISTORY_SIZE" in str(history_mismatch(site(url), {**info, "history": {}}))
    single = {"broker": "redis", "store": "redis", "redis_prefix": "rt:"}
    assert "listens on redis but" in str(broker_mismatch(site("redis+cluster://a:1"), single))


SERVER_CASES = [
    # (REALTIME_BROKER_URL, REALTIME_REDIS_URL, what the one line says)
    ("redis://:s3cret@[::1/0", None, "broker_url: not a URL"),
    ("REDIS+CLUSTER://a:7000", None, "broker_url: write the scheme in lower case"),
    ("rediss+sentinel://:s3cret@s:1/m", None, "broker_url: scheme must be one of"),
    ("redis+sentinel://s:1/m?sentinel_password=", None, "'sentinel_password' has no value"),
    ("amqp://guest:s3cret@h:port/", None, "broker_url: bad port in 'amqp://h:port/'"),
    ("kafka://u:s3cret@h/", None, "broker_url: scheme must be one of"),
    ("amqp://h/", "http://:s3cret@h/", "redis_url: scheme must be one of"),
    ("amqp://h/", "redis+cluster://:s3cret@a:1,b", "redis_url: 'b' is not HOST:PORT"),
    ("amqp://h/", "redis+sentinel://s:26379/m/x", "redis_url: database 'x' is not a number"),
    ("redis+cluster://a:1", "redis://h", "redis_url: only used with an amqp:// broker"),
]


@pytest.mark.parametrize(("broker", "redis_url", "says"), SERVER_CASES)
def test_server_refuses_bad_urls_in_one_line(broker: str, redis_url: str | None, says: str) -> None:
    """REALTIME_BROKER_URL / REALTIME_REDIS_URL: a ConfigError (the CLI prints it and exits),
    never a traceback; one line, no password."""
    env = {"REALTIME_SECRET": "x" * 32, "REALTIME_BROKER_URL": broker}
    if redis_url is not None:
        env["REALTIME_REDIS_URL"] = redis_url
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    message = str(info.value)
    assert says in message and "\n" not in message and "s3cret" not in message, message


BRIDGE_CASES = [
    # (BROKER_URL, REDIS_URL, check id, what the line says)
    ("redis://:s3cret@[::1/0", None, "E002", "not a URL"),
    ("REDIS+SENTINEL://s:1/m", None, "E002", "write the scheme in lower case"),
    ("amqp://guest:s3cret@h:port/", None, "E002", "not a valid broker URL: 'amqp://h:port/'"),
    ("ftp://u:s3cret@h/", None, "E002", "not a valid broker URL"),
    ("redis+cluster://a:1/0", None, "E002", "seed nodes only"),
    ("http://h:8888", None, "E003", "API_KEY"),
    ("amqp://h/", "amqp://u:s3cret@h/", "E005", "is not a Redis URL"),
    ("amqp://h/", "redis+sentinel://:s3cret@s:1", "E005", "needs the service name"),
    ("amqp://h/", "redis+cluster://a:99999", "E005", "bad port"),
]


@pytest.mark.parametrize(("broker", "redis_url", "id_", "says"), BRIDGE_CASES)
def test_bridge_refuses_bad_urls_in_one_line(
    broker: str, redis_url: str | None, id_: str, says: str
) -> None:
    """BROKER_URL / REDIS_URL in ``manage.py check``: one error each, one line, no password."""
    from django_bridge.checks import broker_url_errors

    errors = broker_url_errors({"BROKER_URL": broker, "REDIS_URL": redis_url})
    assert [e.id for e in errors] == [f"django_bridge.{id_}"], errors
    message = errors[0].msg
    assert says in message and "\n" not in message and "s3cret" not in message, message
    if redis_url is None and id_ == "E002":
        # what the transport raises when the checks were not run: the same one line
        from django_bridge import redis_client
        from realtime.brokers.redis_urls import RedisURLError

        if redis_client.is_redis_scheme(broker.split("://")[0].lower()):
            with pytest.raises(RedisURLError):
                redis_client.connect(broker, 1.0)
