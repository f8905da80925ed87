"""``tests.django.settings``: the sample project's settings, for mypy's django-stubs plugin.

setup.cfg names this module; the tests themselves load ``bridge_sample_settings`` directly
(see conftest.py).
"""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _extra in (str(_HERE), str(_HERE.parents[1] / "example")):
    if _extra not in sys.path:
        sys.path.insert(0, _extra)

from bridge_sample_settings import *  # noqa: E402, F403
