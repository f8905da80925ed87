"""Settings of the ASGI sample (run under uvicorn): the bridge sample, REALTIME from the env.

``ASGI_SAMPLE_REALTIME`` (JSON) is merged over the sample's ``REALTIME`` so that a test can
point the process at its own server and broker.
"""

from __future__ import annotations

import json
import os

from bridge_sample_settings import *  # noqa: F403
from bridge_sample_settings import REALTIME as _BASE

ROOT_URLCONF = "asgi_sample_app"
ALLOWED_HOSTS = ["127.0.0.1", "testserver"]
REALTIME = {**_BASE, **json.loads(os.environ.get("ASGI_SAMPLE_REALTIME", "{}"))}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_bridge": {"handlers": ["console"], "level": "INFO"}},
}
