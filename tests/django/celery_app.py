"""The Celery app of the Celery test: a task that publishes inside a transaction.

Broker: the Redis in ``RT_TEST_CELERY_BROKER`` with the key prefix ``RT_TEST_CELERY_PREFIX``
(kombu's ``global_keyprefix``), so the test's queue keys never meet anyone else's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for extra in (str(HERE), str(HERE.parents[1] / "example"), str(HERE.parents[1])):
    if extra not in sys.path:
        sys.path.insert(0, extra)
os.environ["DJANGO_SETTINGS_MODULE"] = "relay_settings"

import django  # noqa: E402

django.setup()

from celery import Celery  # noqa: E402
from django.db import transaction  # noqa: E402

from django_bridge import publish  # noqa: E402


def make_app() -> Celery:
    """Build the app on the test's broker (the test process builds one too, to send)."""
    app = Celery("rt_test_celery", broker=os.environ["RT_TEST_CELERY_BROKER"])
    app.conf.update(
        broker_transport_options={"global_keyprefix": os.environ["RT_TEST_CELERY_PREFIX"]},
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


app = make_app()


@app.task(name="rt_test.judge")
def judge(channel: str, n: int) -> None:
    """Publish a verdict the way a judge task does: inside its transaction, sent on commit."""
    with transaction.atomic():
        publish(channel, "judge.verdict", {"n": n, "pid": os.getpid()}, state=True)
