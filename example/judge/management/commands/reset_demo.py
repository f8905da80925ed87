"""``manage.py reset_demo``: start the demo over, in the database and in Redis together.

Deleting ``db.sqlite3`` by hand leaves the contest's standings in Redis (the next contest
with the same id shows the old board) and lets SQLite reuse submission ids whose channels
already have history and de-duplicated event ids on the realtime server. This command
removes the standings of every contest from Redis, then the contests, problems,
submissions and the bridge's progress and outbox rows (ids are not reused: Django's SQLite
tables are AUTOINCREMENT), and seeds a fresh demo contest.
"""

from __future__ import annotations

from typing import Any

import redis
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from django_bridge.models import ChannelProgress, OutboxEvent
from judge.models import Contest, Submission
from judge.standings import board, rules_for


class Command(BaseCommand):
    help = "Delete the demo's contests, submissions and their Redis standings; seed anew."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-seed", action="store_true", help="do not run seed_demo after")

    def handle(self, *args: Any, **options: Any) -> None:
        contests = list(Contest.objects.all())
        keys = 0
        try:
            for contest in contests:
                keys += board().delete(rules_for(contest))
        except redis.RedisError as exc:
            # the database is left as it was: standings and rows must go together
            raise CommandError(f"cannot clear the standings in Redis: {exc}") from exc
        with transaction.atomic():
            submissions, _ = Submission.objects.all().delete()
            Contest.objects.all().delete()  # problems cascade
            ChannelProgress.objects.all().delete()
            OutboxEvent.objects.all().delete()
        self.stdout.write(
            f"reset: {len(contests)} contest(s), {submissions} submission row(s), "
            f"{keys} standings key(s) in Redis"
        )
        if not options["no_seed"]:
            call_command("seed_demo", stdout=self.stdout)
