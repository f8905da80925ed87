"""``manage.py judge_worker``: judge queued submissions, publishing progress live."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import OperationalError

from judge.worker import claim_next, judge


class Command(BaseCommand):
    help = "Judge queued submissions (demo: outcomes come from the source), forever or --once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="judge what is queued, then exit")
        parser.add_argument(
            "--speed", type=float, default=1.0, help="delay factor (0 = no delays, for tests)"
        )
        parser.add_argument("--poll", type=float, default=0.3, help="seconds between queue polls")

    def handle(self, *args: Any, **options: Any) -> None:
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        while True:
            try:
                submission = claim_next(worker_id)
            except OperationalError as exc:  # e.g. started by honcho before `migrate` ran
                self.stderr.write(f"database not ready ({exc}); retrying")
                time.sleep(1.0)
                continue
            if submission is None:
                if options["once"]:
                    return
                time.sleep(options["poll"])
                continue
            verdict = judge(submission, speed=options["speed"])
            self.stdout.write(f"submission {submission.pk}: {verdict}")
