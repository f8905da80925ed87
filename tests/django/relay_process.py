"""``python tests/django/relay_process.py [realtime_relay args]``: a relay for the tests.

Runs ``manage.py realtime_relay`` with ``relay_settings``. With ``RT_TEST_DIE_AFTER_SENDS=k``
the process SIGKILLs itself right after its k-th batch reached the broker and before that
batch's transaction commits: the worst moment for a relay to die.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for extra in (str(HERE), str(HERE.parents[1] / "example"), str(HERE.parents[1])):
    if extra not in sys.path:
        sys.path.insert(0, extra)
os.environ["DJANGO_SETTINGS_MODULE"] = "relay_settings"


def _die_after(sends: int) -> None:
    import django_bridge.relay as relay

    real = relay.get_transport
    count = 0

    class Dying:
        def __init__(self, transport: Any) -> None:
            self._transport = transport

        def send(self, envelopes: Any) -> Any:
            nonlocal count
            result = self._transport.send(envelopes)
            count += 1
            if count >= sends:
                sys.stdout.write(f"relay {os.getpid()}: dying after send {count}\n")
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return result

    relay.get_transport = lambda: Dying(real())  # type: ignore[assignment]


def main() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    if os.environ.get("RT_TEST_DIE_AFTER_SENDS"):
        _die_after(int(os.environ["RT_TEST_DIE_AFTER_SENDS"]))
    call_command("realtime_relay", *sys.argv[1:])


if __name__ == "__main__":
    main()
