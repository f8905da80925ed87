"""Settings of the relay and publisher processes the database tests start.

The sample project, with ``DATABASES['default']`` and ``REALTIME`` taken from the JSON in
``RT_TEST_DATABASE`` and ``RT_TEST_REALTIME``.
"""

import json
import os

from bridge_sample_settings import *  # noqa: F403

if os.environ.get("RT_TEST_DATABASE"):
    DATABASES = {"default": json.loads(os.environ["RT_TEST_DATABASE"])}
    if DATABASES["default"]["ENGINE"].endswith("mysql"):
        import pymysql

        pymysql.install_as_MySQLdb()
if os.environ.get("RT_TEST_REALTIME"):
    REALTIME = json.loads(os.environ["RT_TEST_REALTIME"])
