"""A uwsgi-style pre-fork: import Django and publish, fork workers that publish, then again.

``python fork_publisher.py CHANNEL CHILDREN EVENTS``: the parent publishes once (so its
transport exists before the fork), forks CHILDREN processes that each publish EVENTS
events, waits for them, and publishes once more with its original transport. Prints a JSON
line: the children's exit codes, and whether the parent still used its first transport.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for extra in (str(HERE), str(HERE.parents[1] / "example"), str(HERE.parents[1])):
    if extra not in sys.path:
        sys.path.insert(0, extra)
os.environ["DJANGO_SETTINGS_MODULE"] = "relay_settings"


def main() -> None:
    import django

    django.setup()
    from django_bridge import publish
    from django_bridge.transports import get_transport

    channel, children, events = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    publish(channel, "fork", {"who": "parent", "k": 0})
    before = id(get_transport())
    pids = []
    for child in range(children):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for k in range(events):
                    publish(channel, "fork", {"who": f"child{child}", "k": k})
                code = 0 if id(get_transport()) != before else 3  # 3: used the inherited one
            finally:
                os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    publish(channel, "fork", {"who": "parent", "k": 1})
    print(json.dumps({"codes": codes, "parent_kept_its_transport": id(get_transport()) == before}))


if __name__ == "__main__":
    main()
