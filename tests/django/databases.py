"""Real PostgreSQL and MariaDB databases for the bridge tests: create, wire up, drop.

Each test database is ``rt_test_<random>`` on the server named by ``REALTIME_TEST_PG_URL``
(default postgresql://postgres@127.0.0.1:5432/postgres, trust auth) or
``REALTIME_TEST_MYSQL_URL`` (default mysql://root@127.0.0.1:3306/, MariaDB, no password);
``scripts/test`` starts private servers when none answers. Under ``CI=true`` a missing
server fails the test (``require_service``); elsewhere it is skipped.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.conftest import require_service

PG_URL = os.environ.get("REALTIME_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MYSQL_URL = os.environ.get("REALTIME_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
VENDORS = ("postgresql", "mysql")


def use_pymysql() -> None:
    """Let Django's MySQL backend run on PyMySQL (pure Python: no client headers to build)."""
    import pymysql

    pymysql.install_as_MySQLdb()


def django_config(vendor: str, name: str) -> dict[str, Any]:
    """Return a Django DATABASES entry for database ``name`` on the test server."""
    url = urlsplit(PG_URL if vendor == "postgresql" else MYSQL_URL)
    config: dict[str, Any] = {
        "ENGINE": f"django.db.backends.{vendor}",
        "NAME": name,
        "USER": unquote(url.username or ("postgres" if vendor == "postgresql" else "root")),
        "PASSWORD": unquote(url.password or ""),
        "HOST": url.hostname or "127.0.0.1",
        "PORT": str(url.port or (5432 if vendor == "postgresql" else 3306)),
        "TEST": {"NAME": name},
    }
    if vendor == "mysql":
        config["OPTIONS"] = {"charset": "utf8mb4"}
    return config


def _admin_execute(vendor: str, sql: str) -> None:
    config = django_config(vendor, "")
    if vendor == "postgresql":
        import psycopg

        with psycopg.connect(
            host=config["HOST"],
            port=int(config["PORT"]),
            user=config["USER"],
            password=config["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            conn.execute(sql.encode())
        return
    import pymysql

    conn = pymysql.connect(
        host=config["HOST"],
        port=int(config["PORT"]),
        user=config["USER"],
        password=config["PASSWORD"],
        connect_timeout=5,
        autocommit=True,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


@contextlib.contextmanager
def scratch_database(vendor: str) -> Iterator[str]:
    """Create ``rt_test_<random>`` on the vendor's server; drop it afterwards (pass or fail)."""
    url = PG_URL if vendor == "postgresql" else MYSQL_URL
    require_service(url, 5432 if vendor == "postgresql" else 3306)
    name = f"rt_test_{uuid.uuid4().hex[:12]}"
    _admin_execute(vendor, f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        drop = f"DROP DATABASE IF EXISTS {name}"
        if vendor == "postgresql":
            drop += " WITH (FORCE)"  # relays killed by the test may leave sessions behind
        _admin_execute(vendor, drop)


@contextlib.contextmanager
def django_alias(vendor: str, name: str) -> Iterator[str]:
    """Add database ``name`` to this process's Django connections as an alias, migrated."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import DEFAULT_DB_ALIAS, connections

    if vendor == "mysql":
        use_pymysql()
    alias = f"{vendor}_{name}"
    full = connections.configure_settings({DEFAULT_DB_ALIAS: django_config(vendor, name)})
    connections.settings[alias] = full[DEFAULT_DB_ALIAS]
    settings.DATABASES[alias] = full[DEFAULT_DB_ALIAS]
    try:
        call_command("migrate", "django_bridge", database=alias, verbosity=0)
        yield alias
    finally:
        connections[alias].close()
        del connections[alias]
        connections.settings.pop(alias, None)
        settings.DATABASES.pop(alias, None)
