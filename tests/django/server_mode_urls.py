"""``/burst``: publish from many greenlets (or threads) at once inside one request."""

from __future__ import annotations

import os
import threading

from django.http import HttpRequest, JsonResponse
from django.urls import path

from django_bridge import publish
from django_bridge.transports import get_transport


def burst(request: HttpRequest) -> JsonResponse:
    """Publish ``n`` events from each of ``tasks`` greenlets; report the transports they used."""
    import gevent

    channel = request.GET["channel"]
    tag = request.GET["tag"]
    tasks, n = int(request.GET["tasks"]), int(request.GET["n"])
    used: list[int] = []

    def work(task: int) -> None:
        for k in range(n):
            publish(channel, "burst", {"tag": tag, "task": task, "k": k})
            gevent.sleep(0)  # let the other greenlets interleave with this one
        used.append(id(get_transport()))

    jobs = [gevent.spawn(work, task) for task in range(tasks)]
    gevent.joinall(jobs, raise_error=True)
    return JsonResponse(
        {
            "pid": os.getpid(),
            "transports": len(set(used)),
            "patched": threading.local.__module__.startswith("gevent"),
        }
    )


urlpatterns = [path("burst", burst)]
