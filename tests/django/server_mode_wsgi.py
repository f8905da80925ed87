"""WSGI entry of the server-mode tests: ``gunicorn --chdir tests/django server_mode_wsgi``."""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for extra in (str(HERE), str(HERE.parents[1] / "example"), str(HERE.parents[1])):
    if extra not in sys.path:
        sys.path.insert(0, extra)
os.environ["DJANGO_SETTINGS_MODULE"] = "server_mode_settings"

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
