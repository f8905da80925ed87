"""A real sample Django project for the bridge tests: the example judge app plus the bridge.

The realtime server and Redis prefix used by the tests are set per run by conftest.py
(``REALTIME`` is replaced there once the server's port is known).
"""

from __future__ import annotations

import os
import tempfile
import uuid

RUN_ID = uuid.uuid4().hex[:10]
REDIS_PREFIX = f"rtdj{RUN_ID}:"
REDIS_URL = os.environ.get("REALTIME_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = f"test-secret-of-the-bridge-tests-{RUN_ID}"
API_KEY = f"test-api-key-{RUN_ID}"

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "bridge_sample_urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"  # the live server (browser tests) needs one

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_bridge",
    "judge",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
_DB_DIR = tempfile.mkdtemp(prefix="bridge-tests-")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(_DB_DIR, "db.sqlite3"),
        "OPTIONS": {"timeout": 20},
        # a file, not shared-cache memory: relay threads need real SQLite locking
        "TEST": {"NAME": os.path.join(_DB_DIR, "test.sqlite3")},
    }
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

REALTIME = {
    "BROKER_URL": REDIS_URL,
    "SECRET": SECRET,
    "URL": "ws://127.0.0.1:1/ws",
    "API_KEY": API_KEY,
    "PREFIX": REDIS_PREFIX,
    "RETRY_BACKOFF": 0.01,
    "TIMEOUT": 2.0,
}
