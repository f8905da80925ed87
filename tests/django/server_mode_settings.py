"""Settings of the Django processes the server-mode tests start (gunicorn, forks, Celery).

The sample project plus a small URL conf; ``REALTIME`` comes from ``RT_TEST_REALTIME``
(JSON), as in ``relay_settings``.
"""

from relay_settings import *  # noqa: F403

ROOT_URLCONF = "server_mode_urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
