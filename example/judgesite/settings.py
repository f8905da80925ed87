"""Settings of the example judge site, read from the environment (see ``.env.example``).

The realtime part reads the same environment variables as ``realtime serve`` so that one
environment (honcho's ``.env``) configures both: REALTIME_SECRET, REALTIME_API_KEY,
REALTIME_BROKER_URL, REALTIME_REDIS_PREFIX; plus REALTIME_PUBLIC_URL, the ws:// address
browsers use, and REALTIME_LEADERBOARD_PREFIX (standings keys). Django's own:
DJANGO_SECRET_KEY, DJANGO_DEBUG, DJANGO_ALLOWED_HOSTS, EXAMPLE_DB. The defaults are the
``.env.example`` values, for a laptop only.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
    if h.strip()
] + ["testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_bridge",
    "judge",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "judgesite.urls"
WSGI_APPLICATION = "judgesite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
        # the judge worker and the web process write concurrently: wait instead of failing
        "OPTIONS": {"timeout": 20},
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "index"

REALTIME = {
    "BROKER_URL": os.environ.get("REALTIME_BROKER_URL", "redis://127.0.0.1:6379/0"),
    "SECRET": os.environ.get("REALTIME_SECRET", "example-secret-change-me-0123456789abcdef"),
    "URL": os.environ.get("REALTIME_PUBLIC_URL", "ws://127.0.0.1:8888/ws"),
    "API_KEY": os.environ.get("REALTIME_API_KEY", "example-api-key"),
    "PREFIX": os.environ.get("REALTIME_REDIS_PREFIX", "rt:"),
    "LEADERBOARD_PREFIX": os.environ.get("REALTIME_LEADERBOARD_PREFIX", "lb:"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_bridge": {"handlers": ["console"], "level": "INFO"},
        "judge": {"handlers": ["console"], "level": "INFO"},
    },
}
